"""Concurrency leases in Redis, shared by the API (a key's requests in flight) and the worker
pool (upstream streams).

A lease is a member of a sorted set scored by its expiry time in ms (Redis' own clock, ``TIME``,
so replicas on machines with skewed clocks agree). Whoever counts the set first prunes the
expired members in the same script, so a process killed with ``kill -9`` holds its slot no longer
than the lease's time-to-live. A live holder renews its lease every third of the TTL
(:class:`LeaseKeeper`) and removes it when done.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.tasks import stop_task

log = logging.getLogger("leases")

#: Lua prelude: ``now`` in ms from Redis' clock.
NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: lease set. ARGV: lease id, ttl ms.
# Re-adds a lease that was pruned (its holder was too slow to renew it, yet is still running):
# the slot is really in use, so it must count again.
_RENEW = (
    NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
)


class LeaseKeeper:
    """Renews one lease in the background until :meth:`release` removes it."""

    def __init__(self, redis: Redis, key: str, lease_id: str, ttl_s: float) -> None:
        self._redis = redis
        self._key = key
        self._lease_id = lease_id
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._renew = redis.register_script(_RENEW)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease-{self._lease_id}")

    async def _run(self) -> None:
        interval = self._ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew(keys=[self._key], args=[self._lease_id, self._ttl_ms])
            except (RedisError, OSError) as exc:  # the lease may lapse; keep trying
                log.warning("could not renew lease %s: %s", self._lease_id, exc)

    async def stop(self) -> None:
        """Stop renewing (the lease itself stays until removed or expired)."""
        task, self._task = self._task, None
        await stop_task(task)

    async def release(self) -> None:
        """Stop renewing and remove the lease; if Redis is unreachable, it expires by itself."""
        await self.stop()
        try:
            await self._redis.zrem(self._key, self._lease_id)
        except (RedisError, OSError) as exc:
            log.warning("could not release lease %s (it expires by itself): %s", self._lease_id, exc)
