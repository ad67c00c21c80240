"""``/admin/doctor``: the last upstream doctor report, and asking a worker for a new one.

The doctor must run where the upstream traffic goes (the worker's settings, proxy and
cloudscraper sessions), so the API does not run it: it enqueues an arq job (``doctor``, through
:mod:`shared.queue`) that the next free worker runs (``worker.doctor.doctor_job``), which writes the report to Redis.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import names
from shared.queue import JobQueue

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
    # Through the queue's one enqueue path: never refused by the cap (an operator asked), and
    # the wake-up names the job so an idle worker takes it now, not at its next poll.
    queue = JobQueue(redis, max_queue=0, expires_s=PENDING_TTL)
    await queue.enqueue(job_id, None, function=names.DOCTOR_FUNCTION, capped=False)
    return {"started": True, **await status(redis)}
