"""REFERENCE ONLY: the queue's enqueue and claim-by-id *before fair queuing* (commit 64b449f^).

Kept for one purpose: ``bench.claimcost`` measures what Redis spends per job on this protocol
and on the fair one (``shared.queue``) in the same run, on the same private Redis. Nothing in
the gateway uses it; it has no fair share, no upstream gate and no redelivery across keys. The
scripts are copied verbatim from ``git show 64b449f^:shared/queue.py`` (``_ENQUEUE``, and
``_CLAIM`` (the full read of the queue) and ``_CLAIM_IDS`` with their ``_ABORTS`` tail), and
called with the arguments that code passed (``QUEUE_READ_PAGES`` was 20 then as now); and the
upstream budget's acquire script of ``64b449f^:worker/jobs/budget.py``, which jobs waiting for an
upstream stream polled. The queue
is a parameter here only so the benchmark can keep this path's jobs apart from the fair path's.
"""

from __future__ import annotations

from typing import Any

from arq.constants import abort_job_max_age, abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names
from shared.queue import QUEUE_READ_PAGES

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

# The full read of the queue (the fallback timer, a wake-up without id, a slot freed in a full
# worker): it walks the queue in pages past every running job (each one EXISTS), up to ARGV[8].
_CLAIM = (
    """
local claimed = {}
local want = tonumber(ARGV[2])
local page = tonumber(ARGV[5])
local offset = 0
while want > 0 and #claimed < 2 * want and offset < tonumber(ARGV[8]) do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', offset, page)
  for i = 1, #due, 2 do
    local key = ARGV[4] .. due[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('PSETEX', key, ARGV[3], '1')
      claimed[#claimed + 1] = due[i]
      claimed[#claimed + 1] = due[i + 1]
      if #claimed >= 2 * want then break end
    end
  end
  if #due < 2 * page then break end
  offset = offset + page
end
"""
    + _ABORTS
)

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

# --- verbatim from 64b449f^:shared/leases.py (NOW_MS) and 64b449f^:worker/jobs/budget.py (_ACQUIRE) ---
# The upstream budget's script: with UPSTREAM_MAX_CONCURRENT saturated, every job waiting in a
# worker slot called it every POLL_S (0.2 s) x uniform(0.5, 1.0) until a stream freed.

NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

WINDOW_MS = 60_000
POLL_S = 0.2

# KEYS: calls log, leases. ARGV: rpm, max concurrent, lease ttl ms, member, window ms (0 = no limit).
# Returns {1, 0} when taken, else {0, ms until a slot of the per-minute budget frees (0: unknown)}.
_ACQUIRE = (
    NOW_MS
    + """
local rpm, maxc, ttl, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now}
  end
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  -- a lease the fair queue's claim took for this job (member: the job id) is this job's slot
  if not redis.call('ZSCORE', KEYS[2], ARGV[4]) and redis.call('ZCARD', KEYS[2]) >= maxc then return {0, 0} end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
if maxc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, 0}
"""
)


class ReferenceBudget:
    """64b449f^'s ``UpstreamBudget._try`` with ``UPSTREAM_RPM`` 0 (reference for the benchmark only)."""

    def __init__(self, redis: Redis, *, max_concurrent: int, lease_ttl_s: float) -> None:
        self._max_concurrent = max_concurrent
        self._ttl_ms = int(lease_ttl_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)

    async def try_acquire(self, member: str) -> bool:
        args: list[str | int] = [0, self._max_concurrent, self._ttl_ms, member, WINDOW_MS]
        taken, _ = await self._acquire(keys=[names.UPSTREAM_CALLS, names.UPSTREAM_LEASES], args=args)
        return bool(taken)


# --- the callers, as 64b449f^'s JobQueue.enqueue and Claimer.claim(ids=...) called them ----------


class ReferenceQueue:
    """The pre-fair-queuing enqueue and claim by id (reference for the benchmark only)."""

    def __init__(self, redis: Redis, *, max_queue: int, expires_s: float, queue: str = names.QUEUE) -> None:
        self._queue = queue
        self._max_queue = max_queue
        self._expires_ms = int(expires_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._claim_ids = redis.register_script(_CLAIM_IDS)

    async def enqueue(self, job_id: str, job: Any) -> bool:
        now = timestamp_ms()
        data = serialize_job(names.CHAT_FUNCTION, (job,), {}, None, now)
        keys = [self._queue, job_key_prefix + job_id, names.WAKE_CHANNEL]
        return bool(await self._enqueue(keys=keys, args=[self._max_queue, data, self._expires_ms, now, job_id]))

    @staticmethod
    def _args(want: int, in_progress_ms: int, read_limit: int, read_aborts: bool) -> list[Any]:
        """The ARGV both claim scripts of 64b449f^ began with (built once there too)."""
        now = timestamp_ms()
        expiry = now + abort_job_max_age
        return [now, want, in_progress_ms, in_progress_key_prefix, read_limit, int(read_aborts), expiry]

    @staticmethod
    def _claimed(raw: list[Any]) -> list[tuple[str, int]]:
        return [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]

    async def claim_ids(
        self, ids: list[str], *, want: int, in_progress_ms: int, read_limit: int, read_aborts: bool
    ) -> list[tuple[str, int]]:
        args = self._args(want, in_progress_ms, read_limit, read_aborts)
        raw, _ = await self._claim_ids(keys=[self._queue, abort_jobs_ss], args=[*args, *ids])
        return self._claimed(raw)

    async def claim_full(
        self, *, want: int, in_progress_ms: int, read_limit: int, read_aborts: bool
    ) -> list[tuple[str, int]]:
        """64b449f^'s ``Claimer.claim`` with ``ids`` None: the full read of the queue."""
        args = [*self._args(want, in_progress_ms, read_limit, read_aborts), read_limit * QUEUE_READ_PAGES]
        raw, _ = await self._claim(keys=[self._queue, abort_jobs_ss], args=args)
        return self._claimed(raw)
