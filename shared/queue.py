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
- **renew** (:func:`renew_in_progress`, the worker every third of ``ORPHAN_JOB_SECONDS``): the
  in-progress keys of the jobs it still runs live on; a dead worker's expire;
- **start** (:class:`StartOnce`, the chat job's first step): claims the job's run key and
  publishes its start message.

**Fair queuing across keys.** arq's queue (the sorted set) still holds every job until it ends,
but which waiting job a worker takes next is decided by start-time fair queuing over keys, in the
claim script: each key (a team key; ``master``; ``dashboard``) has its own line of waiting jobs
(first come, first served within the key), and the key whose head job has the smallest virtual
start time goes first. A key's head starts at ``max(V, F_key)`` when the key becomes active
(``V``: the start time of the job taken last; ``F_key``: where the key's last job ended), and
each job taken moves the key on by ``1 / weight``. So a key that queues 100 jobs does not make
a key that queues 5 a moment later wait behind all 100; with weights 3 and 1 the shares are 3:1;
an idle key saves up no credit, and none starves (``V`` only grows). Weights are in
``names.FQ_WEIGHTS`` (``api.tenancy.weights``), read at each job taken. With
``UPSTREAM_MAX_CONCURRENT`` set, the claim also takes the job's upstream lease
(``names.UPSTREAM_LEASES``, member: the job id; ``worker.jobs.budget`` adopts it), so jobs wait
here, in fair order, rather than in a worker's slot. Jobs with no key (the doctor) wait in a line
of their own that always goes first and takes no upstream lease. A job arq would deliver again
(its worker died, or arq let go of it at shutdown) goes back to the front of its key's line at
the next full poll (``names.FQ_TAKEN``).

**Deliveries and runs, one rule.** arq counts *deliveries* of a job (``max_tries``); the run key
``decopy:run:<job>`` counts *upstream runs*. A chat job runs upstream at most once: the first
delivery that reaches :class:`StartOnce` claims the run key, and every later delivery is refused
without calling the upstream (its client was already told: an ``interrupted`` error, or the API's
idle timeout). A delivery ends with its worker: the in-progress key of a job whose worker died
is no longer renewed and expires within ``ORPHAN_JOB_SECONDS`` (not arq's whole job timeout),
and the next poll delivers the job again. So arq may deliver a chat job :data:`CHAT_MAX_TRIES` =
2 times: the second delivery exists for a job whose worker died *before* it started (it then
runs) or after (it is refused, logged and counted as ``rerun_refused``, so an operator sees the
lost job, and it leaves the queue instead of holding a ``MAX_QUEUE`` place). A third delivery
could only be refused again. The doctor job is delivered once (:data:`DOCTOR_MAX_TRIES`).
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


# KEYS: queue, job key, wake channel, active keys, clock, finish times.
# ARGV: cap (0: none), job bytes, expiry ms, score, job id, key id ('': no fair share), line prefix.
# The job joins its key's line; a key that had nothing waiting becomes active at max(V, F_key).
# Jobs without a key (the doctor) wait in the line of key '', which is always first ('-inf').
# The wake-up names the job.
_ENQUEUE = """
local cap = tonumber(ARGV[1])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
local key = ARGV[6]
redis.call('RPUSH', ARGV[7] .. key, ARGV[5])
if not redis.call('ZSCORE', KEYS[4], key) then
  local s = '-inf'
  if key ~= '' then
    local v = tonumber(redis.call('GET', KEYS[5])) or 0
    s = string.format('%.17g', math.max(v, tonumber(redis.call('HGET', KEYS[6], key)) or 0))
  end
  redis.call('ZADD', KEYS[4], s, key)
end
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""

# KEYS: queue, job key, abort set, wake channel, arq's in-progress key, active keys, finish times.
# ARGV: job id, now ms, line prefix, key id ('-': not known).
# arq keeps a job in the queue until it *finishes*, so being in the queue does not mean waiting:
# the in-progress key (set by the worker that took the job) tells. A running job is taken out of
# the queue (so it can never be picked again, e.g. after its worker died) and marked in arq's
# abort set, and the workers are woken so the one running it cancels it now (returns 0). A job
# still waiting is taken out with its data and out of its key's line (returns 1); a key whose
# line is left empty stops being active, its next job starting where this one would have (it got
# no service for it). (Without the key, the job stays in its line and the claim skips it.) arq
# never clears abort entries of jobs that finished first, so old ones are trimmed here.
_CANCEL = """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - 60000)
local queued = redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  redis.call('PUBLISH', KEYS[4], '1')
  return 0
end
redis.call('DEL', KEYS[2])
local key = ARGV[4]
if key ~= '-' then
  local line = ARGV[3] .. key
  if redis.call('LREM', line, 1, ARGV[1]) > 0 and redis.call('LLEN', line) == 0 then
    local s = redis.call('ZSCORE', KEYS[6], key)
    redis.call('ZREM', KEYS[6], key)
    if s and key ~= '' then redis.call('HSET', KEYS[7], key, s) end
  end
end
return queued
"""


#: The fair queue's keys in the order _ENQUEUE takes them (KEYS[4..6]).
_FAIR_KEYS = (names.FQ_KEYS, names.FQ_CLOCK, names.FQ_FINISH)


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
        key: str | None = None,
    ) -> bool:
        """Queue a call of ``function(job)`` (no argument if ``job`` is None) and wake the workers;
        False when ``capped`` and the queue already holds ``max_queue`` jobs. ``key``: the id of the
        key it runs for, whose fair share it waits in (None: it skips the lines, as the doctor does)."""
        now = timestamp_ms()
        data = serialize_job(function, () if job is None else (job,), {}, None, now)
        expires_ms = self._expires_ms if expires_s is None else int(expires_s * 1000)
        keys = [names.QUEUE, job_key_prefix + job_id, names.WAKE_CHANNEL, *_FAIR_KEYS]
        cap = self._max_queue if capped else 0
        # key '': the line of jobs without a key (the doctor's)
        args: list[Any] = [cap, data, expires_ms, now, job_id, key or "", names.FQ_LINE_PREFIX]
        added = await self._enqueue(keys=keys, args=args)
        return bool(added)

    async def cancel(self, job_id: str, *, key: str | None = None) -> bool:
        """Withdraw a job: True if it was still waiting (it never starts), False if a worker had
        taken it (it is aborted now) or it had already finished. ``key``: the one it was queued
        for (``""`` for none), so it leaves that key's line at once."""
        keys = [
            names.QUEUE,
            job_key_prefix + job_id,
            abort_jobs_ss,
            names.WAKE_CHANNEL,
            in_progress_key_prefix + job_id,
            names.FQ_KEYS,
            names.FQ_FINISH,
        ]
        args: list[Any] = [job_id, timestamp_ms(), names.FQ_LINE_PREFIX, "-" if key is None else key]
        return bool(await self._cancel(keys=keys, args=args))

    async def depth(self) -> int:
        """Jobs queued or running (arq keeps a job in the queue until it finishes)."""
        return int(await self._redis.zcard(names.QUEUE))


# KEYS: queue, abort set, active keys, clock, finish times, weights, taken set, upstream leases.
# ARGV: now ms, most jobs to claim, in-progress ms, in-progress key prefix, line prefix, read
# aborts (0/1), abort-set trim score, upstream streams at once (0: not gated), lease ms, look for
# jobs of dead workers (0/1).
# Returns {claimed id, score, ...} and the abort set's members (empty unless asked for).
# Key names built here (in-progress keys, each key's line) are not in KEYS: they are not known
# before the script reads (arq supports no Redis Cluster either).
# 1. (Full polls only) The jobs taken since (the taken set, members "<key id> <job id>") are
#    looked at: one that ended leaves the set; one still in arq's queue without its in-progress
#    key goes back to the front of its key's line. That is arq's redelivery: its worker died (the
#    key ran out) or arq let go of it at shutdown (the run key refuses a second upstream run).
#    Like arq's own poll, this costs a look per job taken since the last full poll.
# 2. While this worker has room (and, when gated, the pool has an upstream stream free): the head
#    job of the key with the smallest virtual start time; the clock moves to that time and the key
#    on by 1 / weight. Its upstream lease is taken with it. Key '' (no fair share: the doctor) is
#    always first and takes no lease.
_CLAIM = """
local claimed = {}
local want = tonumber(ARGV[2])
local wall = tonumber(ARGV[1])
local prefix, lines = ARGV[4], ARGV[5]
if ARGV[10] == '1' then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[7], 0, 1999)) do
    local cut = string.find(member, ' ', 1, true)
    local key, id = string.sub(member, 1, cut - 1), string.sub(member, cut + 1)
    if not redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZREM', KEYS[7], member)  -- it ended, or was withdrawn
    elseif redis.call('EXISTS', prefix .. id) == 0 then
      redis.call('ZREM', KEYS[7], member)  -- its worker died or let go of it: deliver it again
      redis.call('LPUSH', lines .. key, id)
      if not redis.call('ZSCORE', KEYS[3], key) then
        local s = '-inf'
        if key ~= '' then
          local v = tonumber(redis.call('GET', KEYS[4])) or 0
          s = string.format('%.17g', math.max(v, tonumber(redis.call('HGET', KEYS[5], key)) or 0))
        end
        redis.call('ZADD', KEYS[3], s, key)
      end
    end
  end
end
local maxc, lease_ms = tonumber(ARGV[8]), tonumber(ARGV[9])
local room, now = nil, 0
local steps = 0
while want > 0 and steps < 1000 do
  steps = steps + 1
  local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #head == 0 then break end
  local key = head[1]
  local direct = key == ''
  if not direct then
    if room == nil then  -- counted once, and only when a keyed job waits
      room = want
      if maxc > 0 then
        local t = redis.call('TIME')  -- leases are scored on Redis' clock (shared.leases)
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
        room = maxc - redis.call('ZCARD', KEYS[8])
      end
    end
    if room <= 0 then break end
  end
  local line = lines .. key
  local id = redis.call('LPOP', line)
  local score = id and redis.call('ZSCORE', KEYS[1], id)
  local next_s = head[2]
  if score and redis.call('EXISTS', prefix .. id) == 0 then
    redis.call('PSETEX', prefix .. id, ARGV[3], '1')
    redis.call('ZADD', KEYS[7], wall, key .. ' ' .. id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
    want = want - 1
    if not direct then
      redis.call('SET', KEYS[4], head[2])
      next_s = string.format('%.17g', tonumber(head[2]) + 1 / (tonumber(redis.call('HGET', KEYS[6], key)) or 1))
      room = room - 1
      if maxc > 0 then
        redis.call('ZADD', KEYS[8], now + lease_ms, id)
        redis.call('PEXPIRE', KEYS[8], lease_ms)
      end
    end
  end
  if redis.call('LLEN', line) > 0 then
    if next_s ~= head[2] then redis.call('ZADD', KEYS[3], next_s, key) end
  else
    redis.call('ZREM', KEYS[3], key)
    if not direct then redis.call('HSET', KEYS[5], key, next_s) end
  end
end
local aborts = {}
if ARGV[6] == '1' then
  aborts = redis.call('ZRANGE', KEYS[2], 0, -1)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[7], '+inf')
end
return {claimed, aborts}
"""

#: What a claim returns: the jobs claimed (id, score) and the ids in the abort set (if read).
Claimed = tuple[list[tuple[str, int]], list[str]]


class Claimer:
    """The consuming side: takes the next jobs in fair order, in one round trip (see the module doc).

    arq's own poll keeps every job in the queue until it *ends* and walks each running one with
    WATCH/EXISTS/ZSCORE/UNWATCH (four round trips per running job per poll); the fair claim looks
    only at the keys with jobs waiting, whatever runs. ``upstream_max_concurrent`` (> 0) gates it
    on the pool's upstream streams; ``lease_ttl_s``: how long a taken lease lives unrenewed.
    """

    def __init__(
        self,
        redis: Redis,
        queue: str = names.QUEUE,
        *,
        upstream_max_concurrent: int = 0,
        lease_ttl_s: float = 30.0,
    ) -> None:
        self._queue = queue
        self._gate = upstream_max_concurrent
        self._lease_ms = max(1, int(lease_ttl_s * 1000))
        self._claim = redis.register_script(_CLAIM)

    async def claim(
        self, *, want: int, in_progress_ms: int, read_limit: int, read_aborts: bool, ids: list[str] | None = None
    ) -> Claimed:
        """Take up to ``want`` jobs in fair order and, if ``read_aborts``, read the abort set.

        The fair order decides which jobs start, whatever the wake-ups named: ``ids`` (given after
        a wake-up naming jobs) only spares this poll the look for jobs of dead workers, which a
        full poll (``ids`` None: the timer, a freed slot) does. ``read_limit`` is not used: the
        claim costs the same whatever the queue holds.
        """
        keys = [
            self._queue,
            abort_jobs_ss,
            names.FQ_KEYS,
            names.FQ_CLOCK,
            names.FQ_FINISH,
            names.FQ_WEIGHTS,
            names.FQ_TAKEN,
            names.UPSTREAM_LEASES,
        ]
        now = timestamp_ms()
        args: list[Any] = [
            now,
            want,
            in_progress_ms,
            in_progress_key_prefix,
            names.FQ_LINE_PREFIX,
            int(read_aborts),
            now + abort_job_max_age,
            self._gate,
            self._lease_ms,
            int(ids is None),  # a full poll (the timer, a slot freed) also puts back dead workers' jobs
        ]
        raw, aborts = await self._claim(keys=keys, args=args)
        claimed = [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]
        return claimed, [a.decode() for a in aborts]


async def renew_in_progress(redis: Redis, job_ids: list[str], ttl_ms: int) -> None:
    """Let the in-progress keys of ``job_ids`` (jobs this worker still runs) live ``ttl_ms`` more,
    in one round trip. PEXPIRE never creates a key: a job that ended meanwhile (arq deleted its
    key) stays ended."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.pexpire(in_progress_key_prefix + job_id, ttl_ms)
        await pipe.execute()


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
