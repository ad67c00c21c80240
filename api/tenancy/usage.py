"""Usage per team key, per UTC day and in total, counted by the API when a request ends.

Counters (a Redis hash per key per day, and one per key in total):

- ``requests``: requests the key's limits let through, whatever their outcome;
- ``rejections``: requests refused with 429 by the key's limits (they count nowhere else);
- ``errors``: requests let through that ended in an error (an HTTP status of 400 or more other
  than a client that hung up, or a stream that ended with an error event);
- ``prompt_tokens`` / ``completion_tokens``: estimates (``shared.tokens``) for chat completions:
  the prompt of each job that was queued, the text actually delivered.

The writes happen inside the rate-limit scripts (:mod:`api.tenancy.limits`), atomically with the limit
bookkeeping; this module reads them back for the admin API and the CLI.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

from api.tenancy.keys import KeyRecord, KeyStore, redis_errors
from shared import names

FIELDS = ("requests", "prompt_tokens", "completion_tokens", "errors", "rejections")
#: Days a per-day usage hash is kept after its last update.
DAY_TTL_S = 35 * 86400


def utc_day(at: float | None = None) -> str:
    """The UTC day (``YYYY-MM-DD``) that daily budgets and daily usage are counted in."""
    when = dt.datetime.now(dt.UTC) if at is None else dt.datetime.fromtimestamp(at, dt.UTC)
    return when.strftime("%Y-%m-%d")


def seconds_to_utc_midnight(now: float) -> float:
    """Seconds until the daily token budget starts afresh."""
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    return max(0.0, midnight.timestamp() - now)


@dataclass
class RequestUsage:
    """What one request of a team key used; filled in while it runs, written when it ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The stream failed after its 200 went out (an error event ended it).
    failed: bool = False
    #: Refused with 429 by a limit checked after admission (the prompt does not fit the daily budget).
    rejected: bool = False
    #: Tokens this key had used today when the request was admitted, and its daily budget.
    tokens_used: int = 0
    daily_tokens: int | None = None


def request_usage(request: Request) -> RequestUsage:
    """The request's usage record; a throwaway one for callers nobody accounts (master, open mode)."""
    usage = getattr(request.state, "usage", None)
    return usage if isinstance(usage, RequestUsage) else RequestUsage()


def _counters(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {f: int(raw.get(f.encode(), 0)) for f in FIELDS}


async def read_usage(redis: Redis, key_ids: list[str], day: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """``{id: {"today": counters, "total": counters}}`` for the given keys."""
    day = day or utc_day()
    async with redis_errors():
        async with redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.hgetall(names.key_usage_day(key_id, day))
                pipe.hgetall(names.key_usage_total(key_id))
            rows = await pipe.execute()
    return {
        key_id: {"today": _counters(rows[2 * i]), "total": _counters(rows[2 * i + 1])}
        for i, key_id in enumerate(key_ids)
    }


async def keys_with_usage(redis: Redis) -> list[dict[str, Any]]:
    """The ``data`` of ``GET /admin/keys``: every key, its limits and today's usage, no secret."""
    records = await KeyStore(redis).list_all()
    usage = await read_usage(redis, [r.id for r in records])
    return [{**r.public(), "usage_today": usage[r.id]["today"]} for r in records]


async def usage_report(redis: Redis) -> list[dict[str, Any]]:
    """The ``data`` of ``GET /admin/usage``: per key, today's and total usage."""
    records: list[KeyRecord] = await KeyStore(redis).list_all()
    usage = await read_usage(redis, [r.id for r in records])
    return [{"id": r.id, "name": r.name, **usage[r.id]} for r in records]
