"""``python -m api [serve]``: serve the gateway with uvicorn (uvloop, httptools).

``python -m api keys create|list|revoke`` and ``python -m api usage`` manage team keys
(see :mod:`api.cli`).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from api import cli
from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.settings import Settings


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
    return (f"refusing to serve on {settings.api_host} without API_MASTER_KEY: anyone could use the gateway; "
            "set API_MASTER_KEY, bind a loopback address, or set API_ALLOW_OPEN=true if it is open on purpose")


def serve(settings: Settings) -> int:
    refusal = open_bind_refusal(settings)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    import uvicorn  # here, not at the top: the CLI commands start faster without the server's imports

    from api.app import create_app

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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description="The decopy gateway's API.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API (the default)")
    cli.add_commands(sub)
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "serve"):
            return serve(Settings.from_env())
        return cli.run(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
