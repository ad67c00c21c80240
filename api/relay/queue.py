"""Putting chat jobs into arq's queue and taking them back out, one Redis round trip each.

arq's own ``enqueue_job`` spends three round trips (WATCH, EXISTS, MULTI/EXEC) guarding against
duplicate ids; ours are fresh UUIDs, so one Lua script does the cap check, the enqueue and the
wake-up publish atomically, in arq's own job format (``arq.jobs.serialize_job``).
"""

from __future__ import annotations

import uuid

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names
from shared.messages import ChatJob

# KEYS: queue, job key, wake channel. ARGV: cap, job bytes, expiry ms, score, job id.
# The wake-up names the job: a worker claims it by id without reading the queue (worker/jobs/arq_worker.py).
_ENQUEUE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""

# KEYS: queue, job key, abort set, wake channel, arq's in-progress key. ARGV: job id, now ms.
# arq keeps a job in the queue until it *finishes*, so being in the queue does not mean waiting:
# the in-progress key (set by the worker that took the job) tells. A running job is taken out of
# the queue (so it can never be picked again, e.g. after its worker died) and marked in arq's
# abort set, and the workers are woken so the one running it cancels it now (returns 0). A job
# still waiting is taken out with its data (returns 1). arq never clears abort entries of jobs
# that finished first, so old ones are trimmed here.
_CANCEL = """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - 60000)
local queued = redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  redis.call('PUBLISH', KEYS[4], '1')
  return 0
end
redis.call('DEL', KEYS[2])
return queued
"""


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobQueue:
    """The API's side of the arq queue."""

    def __init__(self, redis: Redis, *, max_queue: int, expires_s: float) -> None:
        self._redis = redis
        self._max_queue = max_queue
        self._expires_ms = int(expires_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._cancel = redis.register_script(_CANCEL)

    async def enqueue(self, job_id: str, job: ChatJob) -> bool:
        """Queue the job; False when the queue already holds ``max_queue`` jobs."""
        now = timestamp_ms()
        data = serialize_job(names.CHAT_FUNCTION, (job,), {}, None, now)
        keys = [names.QUEUE, job_key_prefix + job_id, names.WAKE_CHANNEL]
        added = await self._enqueue(keys=keys, args=[self._max_queue, data, self._expires_ms, now, job_id])
        return bool(added)

    async def cancel(self, job_id: str) -> bool:
        """Withdraw a job: True if it was still waiting (it never starts), False if a worker had
        taken it (it is aborted now) or it had already finished."""
        keys = [
            names.QUEUE,
            job_key_prefix + job_id,
            abort_jobs_ss,
            names.WAKE_CHANNEL,
            in_progress_key_prefix + job_id,
        ]
        return bool(await self._cancel(keys=keys, args=[job_id, timestamp_ms()]))

    async def depth(self) -> int:
        """Jobs queued or running (arq keeps a job in the queue until it finishes)."""
        return int(await self._redis.zcard(names.QUEUE))
