"""What went wrong with Redis, in words a client and an operator can act on.

"Cannot reach Redis" was said for every Redis error, so a Redis that answered but refused writes
(out of memory under ``noeviction``) was reported as unreachable, and ``/readyz`` (a PING) said
ready all along. :func:`describe` names the trouble from the exception's type;
:func:`unavailable` is the client's 503 (the one :class:`shared.errors.RedisUnavailable`, in
those words); :func:`probe_write` is readiness's check that Redis takes writes;
:func:`eviction_warning` is start-up's check that Redis will not evict the gateway's keys (team
keys evicted under ``allkeys-lru`` answered 401 from then on).

Messages never carry the exception's text: it holds Redis's address, which belongs in the logs,
not in an unauthenticated answer.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from shared import names
from shared.errors import RedisUnavailable

log = logging.getLogger("shared.redis")

#: Only this policy never evicts a key: any other may drop team keys, sessions or queued jobs.
SAFE_POLICY = "noeviction"


def describe(exc: BaseException) -> str:
    """One sentence for what Redis did (without addresses)."""
    if isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and "OOM" in str(exc)):
        return "Redis is out of memory and refuses writes (maxmemory reached)."
    if isinstance(exc, ReadOnlyError):
        return "Redis is read-only (a replica) and refuses writes."
    if isinstance(exc, BusyLoadingError):
        return "Redis is loading its data and cannot answer yet."
    if isinstance(exc, ResponseError):
        return "Redis refused a command."
    return "The gateway cannot reach Redis right now."


def unavailable(exc: BaseException, *, retry_after: float = 2) -> RedisUnavailable:
    """The 503 a client gets for a Redis error: the one :class:`RedisUnavailable`, its message
    saying what Redis did (the detail, with the address, goes to the log)."""
    log.warning("Redis error: %s: %s", type(exc).__name__, exc)
    return RedisUnavailable(describe(exc), retry_after=retry_after)


async def probe_write(redis: Redis, process_id: str) -> None:
    """Raise the Redis error if Redis does not take a small write now (readiness)."""
    await redis.set(names.ready_probe(process_id), b"1", ex=30)


async def eviction_warning(redis: Redis) -> str | None:
    """A warning when Redis's eviction policy could drop the gateway's keys, else None."""
    try:
        raw = await redis.config_get("maxmemory-policy")
    except (RedisError, OSError) as exc:  # CONFIG is often disabled on managed Redis
        log.info("could not read Redis's maxmemory-policy (%s); make sure it is %s", type(exc).__name__, SAFE_POLICY)
        return None
    policy = raw.get("maxmemory-policy") or raw.get(b"maxmemory-policy")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if policy is None or policy == SAFE_POLICY:
        return None
    return (
        f"Redis's maxmemory-policy is {policy}: when memory runs out it may evict the gateway's keys "
        f"(team keys, sessions, queued jobs), and evicted team keys answer 401. Set maxmemory-policy "
        f"{SAFE_POLICY} (see docs/hardening.md)."
    )
