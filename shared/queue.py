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
a full poll once its in-progress key is gone (``names.FQ_TAKEN``: a full poll looks only at the
jobs taken whose key may have run out, and at a few more, so it costs the same whatever runs;
``_CLAIM`` says how). ``V`` is kept beside the keys' finish times (field ``''`` of
``names.FQ_FINISH``), so a key becoming active reads both in one command. What this costs Redis
per job, next to the claims it replaced (by id, and the full read of the queue when jobs wait),
is measured by ``make bench`` (``bench.claimcost``): docs/teams.md, "What it costs".

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
#: A full poll looks at this many of the jobs taken (the oldest-scored), due or not, besides those
#: due for a look: so a job let go of early (arq's worker, at shutdown) is seen at once in a small
#: pool, and a full poll costs the same whatever runs (see ``_CLAIM``).
TAKEN_LOOKS = 4


def new_job_id() -> str:
    return uuid.uuid4().hex


# The fair queue's fixed key names, as Lua constants of the scripts that use them: passed as
# KEYS/ARGV they were converted on every call, and every worker woken by a job calls the claim.
# (Redis Cluster would need them in KEYS; arq supports no Redis Cluster, and the scripts build
# key names from what they read anyway: in-progress keys, each key's line.)
_FAIR_NAMES = f"""
local ACTIVE, CLOCK, FINISH, WEIGHTS = '{names.FQ_KEYS}', '{names.FQ_CLOCK}', '{names.FQ_FINISH}', '{names.FQ_WEIGHTS}'
local TAKEN, LEASES, LINES = '{names.FQ_TAKEN}', '{names.UPSTREAM_LEASES}', '{names.FQ_LINE_PREFIX}'
local WAKE, IN_PROGRESS, ABORTS = '{names.WAKE_CHANNEL}', '{in_progress_key_prefix}', '{abort_jobs_ss}'
local LOOKS = {TAKEN_LOOKS}
"""

# Lua, with `key` the key that becomes active (its line was empty): `s`, its virtual start time,
# max(V, F_key), or '-inf' for key '' (no fair share: the doctor's jobs go first). V is field ''
# of the finish times (the clock's former key is read until a job is taken after an upgrade).
# The strings are passed on as Redis wrote them: no number formatting.
_START_TIME = """
local s = '-inf'
if key ~= '' then
  local vf = redis.call('HMGET', FINISH, '', key)
  s = vf[1] or redis.call('GET', CLOCK) or '0'
  if vf[2] and tonumber(vf[2]) > tonumber(s) then s = vf[2] end
end
"""

# KEYS: queue, job key. ARGV: cap (0: none), job bytes, expiry ms, score, job id, key id ('': no
# fair share).
# The job joins its key's line; a key that had nothing waiting becomes active at max(V, F_key).
# Jobs without a key (the doctor) wait in the line of key '', which is always first ('-inf').
# The wake-up names the job.
_ENQUEUE = (
    _FAIR_NAMES
    + """
local cap = tonumber(ARGV[1])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
local key = ARGV[6]
if redis.call('RPUSH', LINES .. key, ARGV[5]) == 1 then  -- its line was empty: the key becomes active
"""
    + _START_TIME
    + """
  redis.call('ZADD', ACTIVE, s, key)
end
redis.call('PUBLISH', WAKE, ARGV[5])
return 1
"""
)

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
        cap = self._max_queue if capped else 0
        # key '': the line of jobs without a key (the doctor's)
        args: list[Any] = [cap, data, expires_ms, now, job_id, key or ""]
        added = await self._enqueue(keys=[names.QUEUE, job_key_prefix + job_id], args=args)
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


# KEYS: queue. ARGV: now ms, most jobs to claim, in-progress ms, read aborts (0/1), abort-set
# trim score, upstream streams at once (0: not gated), lease ms, look for jobs of dead workers (0/1).
# Returns {claimed id, score, ...} and the abort set's members (empty unless asked for).
# 1. (Full polls only) Jobs taken (the taken set, members "<key id> <job id>") are looked at: one
#    that ended leaves the set; one still in arq's queue without its in-progress key goes back to
#    the front of its key's line. That is arq's redelivery: its worker died (the key ran out) or
#    arq let go of it at shutdown (the run key refuses a second upstream run). Not every job
#    taken is looked at, so a full poll costs the same whatever runs: a member's score is when its
#    in-progress key, as last seen, runs out, less in_progress ms (at the claim: when it was
#    taken, the key then set for in_progress ms). Its key cannot have run out before score +
#    in_progress ms, so only members scored before now - in_progress ms are due (up to 2000 at a
#    time), and one found running is scored again from its key's PTTL: a long job is looked at
#    about once per renewal period, not at every poll. Besides, the TAKEN_LOOKS oldest-scored are
#    looked at, due or not (a key arq deleted early, at shutdown, is seen at once in a small
#    pool; in a large one when it is due). The key is the only truth: a score only says when to
#    look, so no job is delivered again while its key lives. Scores are the workers' wall clocks
#    (plus the key's PTTL, a duration on Redis' clock): a skew between workers delays (or hastens)
#    a look by at most the skew, and so does an ORPHAN_JOB_SECONDS that differs between workers.
# 2. While this worker has room (and, when gated, the pool has an upstream stream free): the head
#    job of the key with the smallest virtual start time; the clock moves to that time and the key
#    on by 1 / weight. Its upstream lease is taken with it. Key '' (no fair share: the doctor) is
#    always first and takes no lease. A job in a line is never in progress (it enters a line when
#    queued, or put back without its in-progress key, and leaves it when taken or withdrawn), so
#    it is taken without a look at its in-progress key; one withdrawn meanwhile (no longer in the
#    queue) is skipped. The heads of two keys are read at a time, so the claim that empties the
#    last line knows it without another read.
_CLAIM = (
    _FAIR_NAMES
    + """
local claimed = {}
local want = tonumber(ARGV[2])
if ARGV[8] == '1' then
  local now, life = tonumber(ARGV[1]), tonumber(ARGV[3])
  local due = now - life  -- a member scored before this: its in-progress key, as last seen, ran out
  local look = redis.call('ZRANGE', TAKEN, 0, LOOKS - 1, 'WITHSCORES')  -- the oldest few, whatever their age
  if #look == 2 * LOOKS and tonumber(look[#look]) < due then  -- more are due: all of them (up to 2000)
    look = redis.call('ZRANGEBYSCORE', TAKEN, '-inf', '(' .. due, 'WITHSCORES', 'LIMIT', 0, 2000)
  end
  for i = 1, #look, 2 do
    local member = look[i]
    local cut = string.find(member, ' ', 1, true)
    local key, id = string.sub(member, 1, cut - 1), string.sub(member, cut + 1)
    local ttl = redis.call('ZSCORE', KEYS[1], id) and redis.call('PTTL', IN_PROGRESS .. id)
    if not ttl then
      redis.call('ZREM', TAKEN, member)  -- it ended, or was withdrawn
    elseif ttl ~= -2 then  -- running: due again when its key, as seen now, would run out (-1: no expiry)
      local at = ttl >= 0 and now + ttl - life or now
      if at > tonumber(look[i + 1]) + 1000 then redis.call('ZADD', TAKEN, 'XX', at, member) end
    else
      redis.call('ZREM', TAKEN, member)  -- its worker died or let go of it: deliver it again
      if redis.call('LPUSH', LINES .. key, id) == 1 then  -- its key becomes active again
"""
    + _START_TIME
    + """
        redis.call('ZADD', ACTIVE, s, key)
      end
    end
  end
end
local maxc = tonumber(ARGV[6])
local room, now = nil, 0
local steps = 0
local heads = want > 0 and redis.call('ZRANGE', ACTIVE, 0, 1, 'WITHSCORES') or {}
while #heads > 0 and steps < 1000 do
  steps = steps + 1
  local key, s = heads[1], heads[2]
  local direct = key == ''
  if not direct and maxc > 0 then
    if room == nil then  -- counted once, and only when a keyed job waits
      local t = redis.call('TIME')  -- leases are scored on Redis' clock (shared.leases)
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      room = maxc - redis.call('ZCOUNT', LEASES, '(' .. now, '+inf')  -- the leases not run out
    end
    if room <= 0 then break end
  end
  local line = LINES .. key
  local popped = redis.call('LPOP', line, 2) or {}  -- its head, and whether another follows
  local more = #popped == 2
  if more then redis.call('LPUSH', line, popped[2]) end
  local id = popped[1]
  local score = id and redis.call('ZSCORE', KEYS[1], id)
  local next_s = s
  if score then
    redis.call('PSETEX', IN_PROGRESS .. id, ARGV[3], '1')
    redis.call('ZADD', TAKEN, ARGV[1], key .. ' ' .. id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
    want = want - 1
    if not direct then
      next_s = tonumber(s) + 1 / (tonumber(redis.call('HGET', WEIGHTS, key)) or 1)
      if maxc > 0 then  -- (the set's own expiry is set by the worker adopting the lease: worker.jobs.budget)
        room = room - 1
        redis.call('ZADD', LEASES, now + tonumber(ARGV[7]), id)
      end
    end
  end
  -- the clock V (field '' of the finish times) moves to the start time of the keyed job taken
  if more then
    if next_s ~= s then
      redis.call('ZADD', ACTIVE, next_s, key)
      redis.call('HSET', FINISH, '', s)
    end
  else
    redis.call('ZREM', ACTIVE, key)
    if next_s ~= s then
      redis.call('HSET', FINISH, '', s, key, next_s)
    elseif not direct then
      redis.call('HSET', FINISH, key, s)
    end
  end
  if want > 0 and (more or #heads > 2) then
    heads = redis.call('ZRANGE', ACTIVE, 0, 1, 'WITHSCORES')
  else
    heads = {}  -- no job left waiting, or no room left
  end
end
local aborts = {}
if ARGV[4] == '1' then
  aborts = redis.call('ZRANGE', ABORTS, 0, -1)
  redis.call('ZREMRANGEBYSCORE', ABORTS, ARGV[5], '+inf')
end
return {claimed, aborts}
"""
)

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
        full poll (``ids`` None: the timer, a freed slot) does, at the jobs taken whose in-progress
        key may have run out (taken or last seen running over ``in_progress_ms`` ago, the same on
        every worker: ``ORPHAN_JOB_SECONDS``) and the :data:`TAKEN_LOOKS` oldest. ``read_limit``
        is not used: the claim costs the same whatever the queue holds or runs.
        """
        now = timestamp_ms()
        args: list[Any] = [
            now,
            want,
            in_progress_ms,
            int(read_aborts),
            now + abort_job_max_age,
            self._gate,
            self._lease_ms,
            int(ids is None),  # a full poll (the timer, a slot freed) also puts back dead workers' jobs
        ]
        raw, aborts = await self._claim(keys=[self._queue], args=args)
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
