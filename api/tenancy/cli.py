"""``python -m api keys create|list|revoke`` and ``python -m api usage``: the admin API's functions
(:mod:`api.tenancy.keys`, :mod:`api.tenancy.usage`) from a shell, talking to ``REDIS_URL``.

Without ``REDIS_URL`` in the environment they talk to the ``make run``/``make demo`` running from
this checkout (:mod:`shared.local_run`); either way the first line (on stderr) names the Redis.

Output is a readable table, or with ``--json`` exactly what the admin API answers. Exit codes:
0 done, 1 failed (no such key, Redis unreachable), 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from api.tenancy.keys import KeyStore, parse_new_key
from api.tenancy.usage import FIELDS, keys_with_usage, usage_report
from shared import local_run
from shared.errors import GatewayError, InvalidRequest
from shared.redis_connect import async_redis
from shared.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any) -> None:
    """Add ``keys`` and ``usage`` to the ``python -m api`` argument parser."""
    keys = sub.add_parser("keys", help="create, list or revoke team keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key (its secret is printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--max-concurrent", type=int, help="chat completions in flight at once")
    create.add_argument("--daily-tokens", type=int, help="estimated tokens per UTC day")
    listing = keys.add_parser("list", help="every key with its limits and today's usage")
    revoke = keys.add_parser("revoke", help="revoke a key (effective on every replica's next request)")
    revoke.add_argument("id")
    usage = sub.add_parser("usage", help="usage per key, today and in total")
    for parser in (create, listing, revoke, usage):
        parser.add_argument("--json", action="store_true", help="print JSON (the admin API's answer)")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _when(created: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(created))


async def _create(redis: Redis, args: argparse.Namespace) -> tuple[Any, str]:
    new = parse_new_key(
        {"name": args.name, "rpm": args.rpm, "max_concurrent": args.max_concurrent, "daily_tokens": args.daily_tokens}
    )
    record, secret = await KeyStore(redis).create(new)
    out = {"id": record.id, "key": secret, **record.public()}
    text = (
        f"created key {record.id} ({record.name})\n\n  {secret}\n\n"
        "This is the only time the key is shown: store it now."
    )
    return out, text


async def _list(redis: Redis, args: argparse.Namespace) -> tuple[Any, str]:
    data = await keys_with_usage(redis)
    rows = [
        [
            k["id"],
            k["name"],
            k["rpm"],
            k["max_concurrent"],
            k["daily_tokens"],
            _when(k["created"]),
            k["usage_today"]["requests"],
            k["usage_today"]["prompt_tokens"] + k["usage_today"]["completion_tokens"],
        ]
        for k in data
    ]
    text = (
        _table(
            ["ID", "NAME", "RPM", "MAX_CONCURRENT", "DAILY_TOKENS", "CREATED", "REQUESTS_TODAY", "TOKENS_TODAY"], rows
        )
        if data
        else "no keys"
    )
    return {"object": "list", "data": data}, text


async def _revoke(redis: Redis, args: argparse.Namespace) -> tuple[Any, str]:
    if not await KeyStore(redis).revoke(args.id):
        raise _NotFound(f"no key with id {args.id!r}")
    return {"id": args.id, "deleted": True}, f"revoked key {args.id}"


async def _usage(redis: Redis, args: argparse.Namespace) -> tuple[Any, str]:
    data = await usage_report(redis)
    rows = [
        [u["id"], u["name"], period, *(u[period][f] for f in FIELDS)] for u in data for period in ("today", "total")
    ]
    text = _table(["ID", "NAME", "PERIOD", *(f.upper() for f in FIELDS)], rows) if data else "no keys"
    return {"object": "list", "data": data}, text


class _NotFound(Exception):
    pass


Command = Callable[[Redis, argparse.Namespace], Awaitable[tuple[Any, str]]]


def run(args: argparse.Namespace) -> int:
    """Run a ``keys`` or ``usage`` command; returns the exit code."""
    command: Command = (
        _usage if args.command == "usage" else {"create": _create, "list": _list, "revoke": _revoke}[args.keys_command]
    )
    env, origin = local_run.environment()
    settings = Settings.from_env(env)  # ConfigError is handled by the caller (exit 2)
    print(local_run.describe(settings.redis_url, settings.decopy_base_url, origin), file=sys.stderr)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # the library's warnings would repeat our error

    async def go() -> tuple[Any, str]:
        redis = async_redis(settings, socket_connect_timeout=2, socket_timeout=5)
        try:
            return await command(redis, args)
        finally:
            await redis.aclose()

    try:
        out, text = asyncio.run(go())
    except InvalidRequest as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except (GatewayError, _NotFound) as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        print(f"error: {getattr(exc, 'message', exc)}{cause}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(out, indent=2) if args.json else text)
    return EXIT_OK
