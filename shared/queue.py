"""The job queue's protocol, whole: enqueue, wake, claim, cancel and start-at-most-once.

The queue is arq's (a sorted set of job ids scored by when they are due, each job's data under
``arq:job:<id>``, ``arq:in-progress:<id>`` while a worker holds it, ``arq:abort`` for jobs to
cancel), so arq's own worker code runs the jobs. Every path that touches those keys goes through
this module, one Redis round trip each, with each Lua script beside the function that calls it:

- **enqueue** (:meth:`JobQueue.enqueue`, the API and the dashboard's doctor): cap check, job data,
  queue entry and wake-up in one script (arq's ``enqueue_job`` spends three round trips guarding
  against duplicate ids; ours are fresh UUIDs);
- **wake**: every enqueue publishes the job id on :data:`shared.names.WAKE_CHANNEL` (``"1"``: read
  the whole queue); each worker listens there, so a job starts without waiting for a poll;
- **claim** (:class:`Claimer`, the worker's poll): due jobs not in progress get their in-progress
  key, and the abort set is read, in one script; by id after a wake-up naming the job;
- **cancel** (:meth:`JobQueue.cancel`): a waiting job is withdrawn; a running one is put in the
  abort set and the workers are woken to cancel it;
- **start** (:class:`StartOnce`, the chat job's first step): claims the job's run key and
  publishes its start message.

**Deliveries and runs, one rule.** arq counts *deliveries* of a job (``max_tries``); the run key
``decopy:run:<job>`` counts *upstream runs*. A chat job runs upstream at most once: the first
delivery that reaches :class:`StartOnce` claims the run key, and every later delivery is refused
without calling the upstream (its client was already told: an ``interrupted`` error, or the API's
idle timeout). So arq may deliver a chat job :data:`CHAT_MAX_TRIES` = 2 times: the second
delivery exists for a job whose worker died *before* it started (it then runs) or after (it is
refused, logged and counted as ``rerun_refused``, so an operator sees the lost job). A third
delivery could only be refused again. The doctor job is delivered once (:data:`DOCTOR_MAX_TRIES`).
"""

from __future__ import annotations

import uuid
from typing import Any

from arq.constants import abort_job_max_age, abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names

#: How many times arq may deliver a chat job (see the module docstring: the run key refuses all
#: but the first upstream run; the second delivery runs a job that never started).
CHAT_MAX_TRIES = 2
#: The doctor job is delivered once: a lost run is asked for again from the dashboard.
DOCTOR_MAX_TRIES = 1
#: How long a run key lives: longer than any job may run.
RUN_KEY_TTL = 3600
#: The most job ids a worker keeps from wake-ups between two polls (more: it reads the queue).
MAX_WOKEN_IDS = 1000
#: A read of the queue looks at up to this many pages of ``queue_read_limit`` entries.
QUEUE_READ_PAGES = 20


def new_job_id() -> str:
    return uuid.uuid4().hex


# KEYS: queue, job key, wake channel. ARGV: cap (0: none), job bytes, expiry ms, score, job id.
# The wake-up names the job: a worker claims it by id without reading the queue (Claimer).
_ENQUEUE = """
local cap = tonumber(ARGV[1])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
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


class JobQueue:
    """The producing side: enqueue (with its wake-up), cancel, depth."""

    def __init__(self, redis: Redis, *, max_queue: int, expires_s: float) -> None:
        self._redis = redis
        self._max_queue = max_queue
        self._expires_ms = int(expires_s * 1000)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._cancel = redis.register_script(_CANCEL)

    async def enqueue(
        self,
        job_id: str,
        job: Any,
        *,
        function: str = names.CHAT_FUNCTION,
        capped: bool = True,
        expires_s: float | None = None,
    ) -> bool:
        """Queue a call of ``function(job)`` (no argument if ``job`` is None) and wake the workers;
        False when ``capped`` and the queue already holds ``max_queue`` jobs."""
        now = timestamp_ms()
        data = serialize_job(function, () if job is None else (job,), {}, None, now)
        expires_ms = self._expires_ms if expires_s is None else int(expires_s * 1000)
        keys = [names.QUEUE, job_key_prefix + job_id, names.WAKE_CHANNEL]
        cap = self._max_queue if capped else 0
        added = await self._enqueue(keys=keys, args=[cap, data, expires_ms, now, job_id])
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


# The end of both claim scripts: read the abort set if asked (ARGV[6] == '1'), trimmed at ARGV[7].
_ABORTS = """
local aborts = {}
if ARGV[6] == '1' then
  aborts = redis.call('ZRANGE', KEYS[2], 0, -1)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[7], '+inf')
end
return {claimed, aborts}
"""

# KEYS: queue, abort set. ARGV: now ms, most jobs to claim, in-progress ms, in-progress key prefix,
# queue entries read at a time, read aborts (0/1), abort-set trim score, most entries to look at.
# Returns {claimed id, score, ...} and the abort set's members (empty unless asked for).
# The in-progress keys are built here, not passed in KEYS: their names are not known before the
# queue is read (arq supports no Redis Cluster either).
# arq reads the oldest ``queue_read_limit`` entries only; running jobs stay in the queue, so with
# more than that running across the pool, jobs behind them would wait while slots stand idle.
# The read goes on, page by page, past running jobs (up to ARGV[8] entries).
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

# KEYS and ARGV[1-7]: as _CLAIM's; ARGV[8...]: the job ids to try. Same claim as _CLAIM's, by id.
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

#: What a claim returns: the jobs claimed (id, score) and the ids in the abort set (if read).
Claimed = tuple[list[tuple[str, int]], list[str]]


class Claimer:
    """The consuming side: claims due jobs the way arq's worker would, in one round trip.

    arq's own poll keeps every job in the queue until it *ends* and walks each running one with
    WATCH/EXISTS/ZSCORE/UNWATCH (four round trips per running job per poll); this claims the same
    jobs (due, not in progress; in-progress key set for ``in_progress_ms``) in one script.
    """

    def __init__(self, redis: Redis, queue: str = names.QUEUE) -> None:
        self._queue = queue
        self._claim = redis.register_script(_CLAIM)
        self._claim_ids = redis.register_script(_CLAIM_IDS)

    async def claim(
        self, *, want: int, in_progress_ms: int, read_limit: int, read_aborts: bool, ids: list[str] | None = None
    ) -> Claimed:
        """Claim up to ``want`` due jobs (those named in ``ids`` only, if given) and, if
        ``read_aborts``, read the abort set."""
        keys = [self._queue, abort_jobs_ss]
        now = timestamp_ms()
        args: list[Any] = [
            now,
            want,
            in_progress_ms,
            in_progress_key_prefix,
            read_limit,
            int(read_aborts),
            now + abort_job_max_age,
        ]  # ARGV[1-7] of both scripts
        if ids is None:
            raw, aborts = await self._claim(keys=keys, args=[*args, read_limit * QUEUE_READ_PAGES])
        else:
            raw, aborts = await self._claim_ids(keys=keys, args=[*args, *ids])
        claimed = [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]
        return claimed, [a.decode() for a in aborts]


# KEYS: the job's run key, its channel. ARGV: run key TTL s, the start message.
# Claims the run (a job runs upstream at most once) and announces it, in one round trip. The
# PUBLISH answers how many listen: 0 means the client's API left before the job started.
# A run already claimed answers -1 and what the first run recorded ("claimed" or "text").
_START = """
if not redis.call('SET', KEYS[1], 'claimed', 'NX', 'EX', ARGV[1]) then
  return {-1, redis.call('GET', KEYS[1])}
end
return {redis.call('PUBLISH', KEYS[2], ARGV[2]), false}
"""


class StartOnce:
    """A chat job's first step: claim its run key and publish its start message (see the module doc)."""

    def __init__(self, redis: Redis) -> None:
        self._start = redis.register_script(_START)

    async def __call__(self, job_id: str, start_message: bytes) -> tuple[int, bytes | None]:
        """How many listen to the start message, or -1 and what the first run recorded
        (``b"claimed"``, or ``b"text"`` once text went out) if the job already ran."""
        listeners, recorded = await self._start(
            keys=[names.job_run_key(job_id), names.job_channel(job_id)], args=[RUN_KEY_TTL, start_message]
        )
        return int(listeners), recorded
