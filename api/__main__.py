"""``python -m api [serve]``: serve the gateway with uvicorn (uvloop, httptools).

``API_WORKERS`` > 1 runs that many uvicorn processes on one socket (uvicorn's supervisor, from
the import string ``api.http.app:app_from_env``). ``python -m api health`` asks the local API's
``/healthz`` and exits 0 or 1 (the image's HEALTHCHECK). ``python -m api keys
create|list|revoke`` and ``python -m api usage`` manage team keys (see :mod:`api.tenancy.cli`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
import urllib.request
from typing import Any

from shared.preflight import require_dependencies

# Before the imports below: a Python without them gets a sentence saying which one to use, not a traceback.
require_dependencies("api")

from api.tenancy import cli
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.settings import Settings

#: Below this, start-up warns that the master key is short enough to guess.
MIN_MASTER_KEY_LENGTH = 32


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the API on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def open_bind_refusal(settings: Settings) -> str | None:
    """Why serving must not start (an open ``/v1/*`` on a non-loopback address), or None."""
    if settings.api_master_key or settings.api_allow_open or is_loopback(settings.api_host):
        return None
    return (
        f"refusing to serve on {settings.api_host} without API_MASTER_KEY: anyone could use the gateway; "
        "set API_MASTER_KEY, bind a loopback address, or set API_ALLOW_OPEN=true if it is open on purpose"
    )


def warn_weak_master_key(settings: Settings) -> None:
    """A short master key can be guessed despite the login throttle: say so at start."""
    key = settings.api_master_key
    if key is not None and len(key) < MIN_MASTER_KEY_LENGTH:
        logging.getLogger("api").warning(
            "API_MASTER_KEY is only %d characters long: use at least %d random characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            len(key),
            MIN_MASTER_KEY_LENGTH,
        )


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


def serve(settings: Settings) -> int:
    refusal = open_bind_refusal(settings)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2

    from uvicorn.supervisors import Multiprocess

    from api.http.app import INSTANCE_ENV, create_app
    from api.http.connections import GuardedConfig, connection_cap, raise_open_file_limit
    from api.http.shutdown import GatewayServer

    setup_logging(settings.log_level)
    warn_weak_master_key(settings)
    # Before any socket: each uvicorn process (spawned ones too) inherits the raised limit.
    open_files = raise_open_file_limit()
    # One id for this container's uvicorn processes (they inherit the environment).
    os.environ[INSTANCE_ENV] = f"{socket.gethostname()}-{os.getpid()}"
    common: dict[str, Any] = dict(
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        log_config=None,
        access_log=False,  # our own access log (api.http.access) has the fields that matter
        lifespan="on",
        # Slow and idle clients (docs/hardening.md): deadlines for a request's headers and body,
        # idle keep-alive connections closed, a 503 over the connection cap.
        header_timeout=settings.api_header_timeout,
        body_timeout=settings.api_body_timeout,
        timeout_keep_alive=max(1, round(settings.api_keepalive_timeout)),
        limit_concurrency=connection_cap(settings.api_max_connections, open_files),
    )
    if settings.api_workers > 1:
        # uvicorn's supervisor (what uvicorn.run does for workers > 1, with our config class);
        # each process drains through uvicorn's own graceful shutdown.
        config = GuardedConfig(
            "api.http.app:app_from_env",
            factory=True,
            workers=settings.api_workers,
            timeout_graceful_shutdown=max(1, round(settings.api_drain_seconds)),
            **common,
        )
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    app = create_app(settings)
    # The drain (API_DRAIN_SECONDS, api.http.shutdown) runs before uvicorn's own shutdown; uvicorn's
    # graceful timeout is only the backstop for what is left after it.
    config = GuardedConfig(app, timeout_graceful_shutdown=5, **common)
    GatewayServer(config, app, drain_seconds=settings.api_drain_seconds).run()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description="The decopy gateway's API.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API (the default)")
    sub.add_parser("health", help="exit 0 if the local API answers /healthz, else 1")
    cli.add_commands(sub)
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "serve"):
            return serve(Settings.from_env())
        if args.command == "health":
            return health(Settings.from_env())
        return cli.run(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
