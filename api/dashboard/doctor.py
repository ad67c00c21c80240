"""``/admin/doctor``: the last upstream doctor report, and asking a worker for a new one.

The doctor must run where the upstream traffic goes (the worker's settings, proxy and
cloudscraper sessions), so the API does not run it: it enqueues an arq job (``doctor``) that
the next free worker runs (``worker.doctor.doctor_job``), which writes the report to Redis.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names

#: How long a requested run may stay queued or running before the dashboard stops waiting.
PENDING_TTL = 300


async def status(redis: Redis) -> dict[str, Any]:
    """``{"last": <report or null>, "pending": {"job_id", "requested"} or null}``."""
    last, pending = await redis.mget(names.DOCTOR_LAST, names.DOCTOR_PENDING)
    return {"last": orjson.loads(last) if last else None, "pending": orjson.loads(pending) if pending else None}


async def request_run(redis: Redis) -> dict[str, Any]:
    """Enqueue a doctor run unless one is already pending; says which."""
    job_id = "doctor-" + uuid.uuid4().hex
    pending = {"job_id": job_id, "requested": time.time()}
    if not await redis.set(names.DOCTOR_PENDING, orjson.dumps(pending), nx=True, ex=PENDING_TTL):
        return {"started": False, **await status(redis)}
    now = timestamp_ms()
    data = serialize_job(names.DOCTOR_FUNCTION, (), {}, None, now)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(job_key_prefix + job_id, data, px=PENDING_TTL * 1000)
        pipe.zadd(names.QUEUE, {job_id: now})
        pipe.publish(names.WAKE_CHANNEL, b"1")  # an idle worker takes it now, not at its next poll
        await pipe.execute()
    return {"started": True, **await status(redis)}
