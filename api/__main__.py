"""``python -m api``: serve the gateway with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.settings import Settings


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.worker_drain_seconds),
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
