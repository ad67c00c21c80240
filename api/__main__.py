"""``python -m api``: serve the gateway with uvicorn (uvloop, httptools).

``API_WORKERS`` > 1 runs that many uvicorn processes on one socket (uvicorn's supervisor, from
the import string ``api.app:app_from_env``). ``python -m api health`` asks the local API's
``/healthz`` and exits 0 or 1 (the image's HEALTHCHECK).
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

import uvicorn

from api.app import INSTANCE_ENV, create_app
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.settings import Settings


def health(settings: Settings) -> int:
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    url = f"http://{host}:{settings.api_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            ok = resp.status == 200
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{'healthy' if ok else 'unhealthy'}: {url}")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if argv[:1] == ["health"]:
        return health(settings)
    if argv:
        print("usage: python -m api [health]", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    # One id for this container's uvicorn processes (they inherit the environment).
    os.environ[INSTANCE_ENV] = f"{socket.gethostname()}-{os.getpid()}"
    common = dict(
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,  # our own access log (api.access) has the fields that matter
        timeout_graceful_shutdown=int(settings.worker_drain_seconds),
        lifespan="on",
    )
    if settings.api_workers > 1:
        uvicorn.run("api.app:app_from_env", factory=True, workers=settings.api_workers, **common)  # type: ignore[arg-type]
        return 0
    uvicorn.Server(uvicorn.Config(create_app(settings), **common)).run()  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
