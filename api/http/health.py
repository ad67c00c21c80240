"""Readiness: may this API process take requests now?"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.applications import Starlette

from api.http.stats import live_workers
from shared.errors import RedisUnavailable, ServiceUnavailable


async def check_ready(app: Starlette) -> None:
    """Raise :class:`ServiceUnavailable` naming the reason unless Redis answers, a worker is alive
    and this process is not draining."""
    state = app.state
    if getattr(state, "draining", False):
        raise ServiceUnavailable("This API process is draining for shutdown.", code="draining")
    try:
        await asyncio.wait_for(state.redis.ping(), 2)
    except (RedisError, OSError, TimeoutError) as exc:
        raise RedisUnavailable(f"Redis does not answer: {exc or type(exc).__name__}.") from exc
    if not state.hub.connected:
        raise RedisUnavailable("The pub/sub connection to Redis is down.")
    try:
        workers = await live_workers(state.redis)
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(f"Redis does not answer: {exc}.") from exc
    if not any(alive for _, alive in workers.values()):
        raise ServiceUnavailable("No worker is alive: requests would wait in the queue.", code="no_workers")
