"""Readiness: may this API process take requests now?"""

from __future__ import annotations

import asyncio
import os

from redis.exceptions import RedisError
from starlette.applications import Starlette

from api.http.stats import live_workers
from shared import redis_trouble
from shared.errors import RedisUnavailable, ServiceUnavailable


async def check_ready(app: Starlette) -> None:
    """Raise :class:`ServiceUnavailable` naming the reason unless Redis answers and takes writes, a
    worker is alive and this process is not draining. The reason never holds Redis's address
    (``/readyz`` needs no key); the log has it."""
    state = app.state
    if getattr(state, "draining", False):
        raise ServiceUnavailable("This API process is draining for shutdown.", code="draining")
    try:
        # A write, not a PING: a Redis out of memory under noeviction answers PING but refuses writes.
        await asyncio.wait_for(redis_trouble.probe_write(state.redis, f"{os.getpid()}"), 2)
    except (RedisError, OSError, TimeoutError) as exc:
        raise redis_trouble.unavailable(exc) from exc
    if not state.hub.connected:
        raise RedisUnavailable("The pub/sub connection to Redis is down.")
    try:
        workers = await live_workers(state.redis)
    except (RedisError, OSError) as exc:
        raise redis_trouble.unavailable(exc) from exc
    if not any(alive for _, alive in workers.values()):
        raise ServiceUnavailable("No worker is alive: requests would wait in the queue.", code="no_workers")
