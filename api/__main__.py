"""``python -m api``: serve the gateway with uvicorn (uvloop, httptools)."""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app
from api.shutdown import GatewayServer
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
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        # The drain (API_DRAIN_SECONDS, api.shutdown) runs before uvicorn's own shutdown; this is
        # only the backstop for what is left after it.
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    GatewayServer(config, app, drain_seconds=settings.api_drain_seconds).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
