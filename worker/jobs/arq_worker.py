"""arq's ``Worker``, woken by a Redis message instead of only by its poll timer.

arq finds jobs by polling the queue every ``poll_delay`` (0.5 s by default), and that delay
lands on every request's time to first token. The API publishes on ``shared.names.WAKE_CHANNEL``
in the same script that enqueues (or aborts) a job; each worker listens there and polls at once.
The poll timer stays as a fallback (``WORKER_POLL_DELAY``) for a wake-up lost while
reconnecting. A worker also wakes itself when one of its jobs ends while it was full, so a job
that waited for a free slot starts without waiting for the next poll.

A poll is one Redis round trip (``_CLAIM``). arq's own poll reads up to ``queue_read_limit`` ids
from the queue, and arq keeps a job there until it *ends*, so it walks every running job of every
worker with WATCH/EXISTS/ZSCORE/UNWATCH: four round trips per running job per poll, and a poll
per wake-up. At 25 streams/s that was 180 Redis commands per stream (bench: 22 ms of worker CPU
per stream). The script claims the same jobs arq would (due, not in progress; in-progress key
set for ``in_progress_timeout_s``) and reads the abort set in the same call.

The API's wake-up names the job it enqueued, and a worker so woken claims that job by its id
(``_CLAIM_IDS``: a few commands whatever the queue holds) instead of reading the queue: every
worker hears every wake-up, so with M workers and R jobs running a read of the queue would cost
Redis M × R lookups per new job. The full read stays for what an id cannot say: the fallback
timer, a wake-up without an id ("1": a job withdrawn, or an older API), a slot freed in a full
worker (a job left waiting), and a failed poll.

Jobs whose worker is gone: arq marks a running job with an in-progress key that lives for the
job's whole timeout (``TOTAL_TIMEOUT`` + 70 s, about 11 minutes), and a job stays in the queue
(and counts against ``MAX_QUEUE``) until that key goes. A worker that died, or a Redis restarted
with its data while jobs ran (their ends could not be written), left such jobs for 11 minutes:
new requests got ``queue_full`` with nothing running. Here the key lives ``ORPHAN_JOB_SECONDS``
(``in_progress_seconds``) and the worker renews the keys of the jobs it still runs every third
of that (:meth:`WakeableWorker._keep_in_progress`, its own task: draining included). A job nobody renews is
claimed again by the next poll and cleared without running: arq ends it as expired when its
data is gone (``QUEUE_TIMEOUT``), else the runner refuses the re-run (its run key,
``worker/jobs/runner.py``), so the upstream is never called twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import arq.worker
from arq.connections import create_pool
from arq.constants import abort_job_max_age, abort_jobs_ss, in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import RedisError

from shared import names

log = logging.getLogger("worker")


def _arguments_not_shown(args: Any, kwargs: Any) -> str:
    return "…"


# arq's run_job builds repr() of every job's arguments for an INFO line before the logger can
# drop it (shared.logs keeps arq at WARNING: the arguments hold the prompt). A chat job's
# argument holds the prompt and the image bytes: 56 ms of CPU for a 5 MB image, on the event
# loop that serves every other stream of this worker. The line keeps its place, without them.
arq.worker.args_to_string = _arguments_not_shown  # type: ignore[attr-defined]

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

#: The most job ids a worker keeps from wake-ups between two polls (more: it reads the queue).
MAX_WOKEN_IDS = 1000
#: A read of the queue looks at up to this many pages of ``queue_read_limit`` entries.
QUEUE_READ_PAGES = 20


class WakeableWorker(Worker):
    """arq's ``Worker``, woken by ``WAKE_CHANNEL`` and polling in one round trip (see the module doc)."""

    def __init__(self, *args: Any, in_progress_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if in_progress_seconds is not None:  # short-lived, renewed while the job runs (module doc)
            self.in_progress_timeout_s = in_progress_seconds
        self._wake = asyncio.Event()
        self._claim: Any = None
        self._claim_ids: Any = None
        self._woken_ids: list[str] = []  # jobs named by wake-ups since the last poll
        self._read_queue = True  # the next poll reads the queue (see the module doc)

    def wake(self) -> None:
        self._read_queue = True
        self._wake.set()

    def _release_sem_dec_counter_on_complete(self) -> None:
        # Only a full worker can have left a due job in the queue; one with a free slot took it.
        was_full = self.job_counter >= self.max_jobs
        super()._release_sem_dec_counter_on_complete()
        if was_full:
            self.wake()

    async def _poll_iteration(self) -> None:
        # arq's _poll_iteration with start_jobs and _cancel_aborted_jobs in one script.
        if self.burst:  # not used by the gateway; arq's own poll knows its job budget
            await super()._poll_iteration()
            return
        if self._claim is None:
            self._claim = self.pool.register_script(_CLAIM)
            self._claim_ids = self.pool.register_script(_CLAIM_IDS)
        want = self.max_jobs - self.job_counter if self.allow_pick_jobs else 0
        read_aborts = self.allow_abort_jobs and bool(self.job_tasks)
        ids, self._woken_ids = self._woken_ids, []
        read_queue, self._read_queue = self._read_queue or not ids, False
        keys = [self.queue_name, abort_jobs_ss]
        now = timestamp_ms()
        args = [
            now,
            want,
            int(self.in_progress_timeout_s * 1000),
            in_progress_key_prefix,
            self.queue_read_limit,
            int(read_aborts),
            now + abort_job_max_age,
        ]  # ARGV[1-7] of both scripts
        if read_queue and (want > 0 or read_aborts):
            claimed, aborts = await self._claim(keys=keys, args=[*args, self.queue_read_limit * QUEUE_READ_PAGES])
        elif not read_queue and want > 0:
            # Jobs this worker cannot take now stay queued: a slot freed later reads the queue.
            claimed, aborts = await self._claim_ids(keys=keys, args=[*args, *ids])
        else:
            claimed, aborts = [], []
        if claimed or aborts:
            for i in range(0, len(claimed), 2):
                await self._start_claimed(claimed[i].decode(), int(float(claimed[i + 1])))
            if aborts:
                await self._apply_aborts(aborts)
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                t.result()  # as arq does: an error in run_job surfaces here
        await self.heart_beat()

    async def _keep_in_progress(self) -> None:
        """Renew the in-progress keys of the jobs this worker still runs, every third of their life.

        PEXPIRE never creates a key: a job that ended meanwhile (arq deleted its key) stays ended.
        """
        ttl_ms = int(self.in_progress_timeout_s * 1000)
        while True:
            await asyncio.sleep(self.in_progress_timeout_s / 3)
            running = [job_id for job_id, t in self.tasks.items() if not t.done()]
            if not running:
                continue
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in running:
                        pipe.pexpire(in_progress_key_prefix + job_id, ttl_ms)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not renew %d running job(s) (%s); retrying", len(running), exc)

    async def _start_claimed(self, job_id: str, score: int) -> None:
        # The part of arq's start_jobs after a successful claim. The semaphore (released when the
        # job ends) does not block here: at most max_jobs - job_counter jobs were claimed.
        await self.sem.acquire()
        self.job_counter += 1
        t = self.loop.create_task(self.run_job(job_id, score))
        t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = t

    async def _apply_aborts(self, abort_job_ids: list[bytes]) -> None:
        # The rest of arq's _cancel_aborted_jobs, once the abort set has been read.
        aborted: set[str] = set()
        for job_id_bytes in abort_job_ids:
            job_id = job_id_bytes.decode()
            task = self.job_tasks.get(job_id)
            if task is not None:
                aborted.add(job_id)
                task.cancel()
        if aborted:
            self.aborting_tasks.update(aborted)
            await self.pool.zrem(abort_jobs_ss, *aborted)

    async def _listen_for_wakeups(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(names.WAKE_CHANNEL)
                    delay = 0.1
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                        if message is None:
                            continue
                        data = message["data"]
                        if data == b"1" or len(self._woken_ids) >= MAX_WOKEN_IDS:
                            self._read_queue = True
                        else:
                            self._woken_ids.append(data.decode())
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("wake-up channel lost (%s); polling every %.2fs until it is back", exc, self.poll_delay_s)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def main(self) -> None:
        # Same as arq's Worker.main, with the poll timer replaced by "timer or wake-up".
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        log.info("worker starting: functions %s, queue %s", ", ".join(self.functions), self.queue_name)
        self.ctx["redis"] = self.pool
        self.ctx["worker"] = self
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen_for_wakeups(), name="wake-listener")
        keeper = asyncio.create_task(self._keep_in_progress(), name="in-progress-keeper")
        try:
            while True:
                self._wake.clear()
                try:
                    await self._poll_iteration()
                except (RedisError, OSError) as exc:
                    log.error("queue poll failed (%s); retrying", exc)
                    self._read_queue = True
                    await asyncio.sleep(min(1.0, self.poll_delay_s))
                try:
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
                except TimeoutError:
                    self._read_queue = True  # the fallback poll reads the queue
        finally:
            for task in (listener, keeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
