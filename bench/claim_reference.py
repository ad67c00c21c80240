"""REFERENCE ONLY: the queue's enqueue and claim-by-id *before fair queuing* (commit 64b449f^).

Kept for one purpose: ``bench.claimcost`` measures what Redis spends per job on this protocol
and on the fair one (``shared.queue``) in the same run, on the same private Redis. Nothing in
the gateway uses it; it has no fair share, no upstream gate and no redelivery across keys. The
scripts are copied verbatim from ``git show 64b449f^:shared/queue.py`` (``_ENQUEUE``, and
``_CLAIM_IDS`` with its ``_ABORTS`` tail), and called with the arguments that code passed.
"""

from __future__ import annotations

from typing import Any

from arq.constants import abort_job_max_age, abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names

# --- verbatim from 64b449f^:shared/queue.py ------------------------------------------------------

_ENQUEUE = """
local cap = tonumber(ARGV[1])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""

_ABORTS = """
local aborts = {}
if ARGV[6] == '1' then
  aborts = redis.call('ZRANGE', KEYS[2], 0, -1)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[7], '+inf')
end
return {claimed, aborts}
"""

_CLAIM_IDS = (
    """
local claimed = {}
local want = tonumber(ARGV[2])
for i = 8, #ARGV do
  if #claimed >= 2 * want then break end
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    local key = ARGV[4] .. ARGV[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('PSETEX', key, ARGV[3], '1')
      claimed[#claimed + 1] = ARGV[i]
      claimed[#claimed + 1] = score
    end
  end
end
"""
    + _ABORTS
)

# --- the callers, as 64b449f^'s JobQueue.enqueue and Claimer.claim(ids=...) called them ----------


class ReferenceQueue:
    """The pre-fair-queuing enqueue and claim by id (reference for the benchmark only)."""

    def __init__(self, redis: Redis, *, max_queue: int, expires_s: float) -> None:
        self._max_queue = max_queue
        self._expires_ms = int(expires_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim_ids = redis.register_script(_CLAIM_IDS)

    async def enqueue(self, job_id: str, job: Any) -> bool:
        now = timestamp_ms()
        data = serialize_job(names.CHAT_FUNCTION, (job,), {}, None, now)
        keys = [names.QUEUE, job_key_prefix + job_id, names.WAKE_CHANNEL]
        return bool(await self._enqueue(keys=keys, args=[self._max_queue, data, self._expires_ms, now, job_id]))

    async def claim_ids(
        self, ids: list[str], *, want: int, in_progress_ms: int, read_limit: int, read_aborts: bool
    ) -> list[tuple[str, int]]:
        now = timestamp_ms()
        args: list[Any] = [
            now,
            want,
            in_progress_ms,
            in_progress_key_prefix,
            read_limit,
            int(read_aborts),
            now + abort_job_max_age,
        ]
        raw, _ = await self._claim_ids(keys=[names.QUEUE, abort_jobs_ss], args=[*args, *ids])
        return [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]
