"""A brake on guessing the master key: failed logins counted in Redis, per address and overall.

The master key opens the dashboard's login form and ``/admin`` (as a Bearer token); without a
brake, 300 guesses took 0.39 s. Each failure counts in two Redis counters that every API replica
shares: one for the client's address (an IPv6 address counts by its /64, which one host
usually holds whole) and one for everyone. While either is over its limit
(``LOGIN_MAX_FAILURES``, ``LOGIN_MAX_FAILURES_GLOBAL`` per ``LOGIN_WINDOW`` seconds) every
attempt is refused with 429 and ``Retry-After`` before the key is even compared, so the right
key cannot be found by trying faster. The counters are fixed windows that start at the first
failure (one INCR and one EXPIRE NX per failure, one MGET per attempt); a success clears the
address's own counter.

Why not a library: the limiter libraries for Starlette count requests, not failures, and none
shares a per-outcome counter through the Redis client the app already holds.
"""

from __future__ import annotations

import ipaddress
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Scope

from shared import names, redis_trouble
from shared.errors import RateLimited
from shared.settings import Settings


def client_address(scope: Scope) -> str:
    """The address a failure counts against (uvicorn applies trusted proxies' X-Forwarded-For)."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """Checks and counts master-key attempts; raises ``RateLimited`` or ``ServiceUnavailable``."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._per_address = settings.login_max_failures
        self._overall = settings.login_max_failures_global
        self._window = max(1, math.ceil(settings.login_window))

    async def check(self, scope: Scope) -> None:
        """Refuse the attempt (429) while this address or everyone failed too often."""
        own, every = names.login_failures(client_address(scope)), names.LOGIN_FAILURES_ALL
        try:
            counts = await self._redis.mget([own, every])
            over = [
                key
                for key, count, limit in zip((own, every), counts, (self._per_address, self._overall))
                if count is not None and int(count) >= limit
            ]
            wait = max([await self._redis.ttl(key) for key in over], default=0)
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc
        if over:
            raise RateLimited(
                "Too many failed logins: wait before trying again.",
                code="login_throttled",
                retry_after=max(1, wait),
            )

    async def failed(self, scope: Scope) -> None:
        """Count one wrong key against this address and against everyone."""
        own = names.login_failures(client_address(scope))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in (own, names.LOGIN_FAILURES_ALL):
                    pipe.incr(key)
                    pipe.expire(key, self._window, nx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc

    async def succeeded(self, scope: Scope) -> None:
        """The right key: this address starts afresh (the overall counter runs its window out)."""
        try:
            await self._redis.delete(names.login_failures(client_address(scope)))
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc
