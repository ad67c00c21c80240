"""arq's ``Worker``, woken by a Redis message instead of only by its poll timer.

arq finds jobs by polling the queue every ``poll_delay`` (0.5 s by default), and that delay
lands on every request's time to first token. The API publishes on ``shared.names.WAKE_CHANNEL``
in the same script that enqueues (or aborts) a job; each worker listens there and polls at once.
The poll timer stays as a fallback (``WORKER_POLL_DELAY``) for a wake-up lost while
reconnecting. A worker also wakes itself when one of its jobs ends while it was full, so a job
that waited for a free slot starts without waiting for the next poll.

A poll is one Redis round trip (:class:`shared.queue.Claimer`). arq's own poll reads up to
``queue_read_limit`` ids from the queue, and arq keeps a job there until it *ends*, so it walks
every running job of every worker with WATCH/EXISTS/ZSCORE/UNWATCH: four round trips per running
job per poll, and a poll per wake-up (at 25 streams/s, 180 Redis commands per stream). The claim
script instead takes the next jobs in fair order across keys (start-time fair queuing, see
:mod:`shared.queue`), looking only at the keys that have jobs waiting, whatever runs; it sets
the in-progress key as arq would and reads the abort set in the same call. With
``UPSTREAM_MAX_CONCURRENT`` set, it takes a job only with an upstream stream free for it, and a
stream freed anywhere in the pool wakes every worker (``worker.jobs.budget``).

Every worker hears every wake-up; which jobs start is the fair order's choice, not the wake-up's.
A wake-up naming a job only spares the poll the look for jobs of dead workers, which the full
polls do: the fallback timer, a wake-up without an id ("1": a job withdrawn, a stream freed), a
slot freed in a full worker, and a failed poll.

Jobs whose worker is gone: arq marks a running job with an in-progress key that lives for the
job's whole timeout (``TOTAL_TIMEOUT`` + 70 s, about 11 minutes), and a job stays in the queue
(and counts against ``MAX_QUEUE``) until that key goes. A worker that died, or a Redis restarted
with its data while jobs ran (their ends could not be written), left such jobs for 11 minutes:
new requests got ``queue_full`` with nothing running. Here the key lives ``ORPHAN_JOB_SECONDS``
(``in_progress_seconds``) and the worker renews the keys of the jobs it still runs every third
of that (:meth:`WakeableWorker._keep_in_progress`, its own task: draining included). A job
nobody renews is claimed again by the next poll and cleared without running: arq ends it as
expired when its data is gone (``QUEUE_TIMEOUT``), else the runner refuses the re-run (its run
key), so the upstream is never called twice (the queue protocol's rule: :mod:`shared.queue`).

arq's private parts this needs (its slots, its running tasks, its start-up, the in-progress
key's life, the job-argument log line) are behind :class:`worker.jobs.arq_fence.FencedWorker`;
the claim and renewal commands are the queue protocol's (:mod:`shared.queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from redis.exceptions import RedisError

from shared import names
from shared.backoff import Backoff
from shared.queue import MAX_WOKEN_IDS, Claimer, renew_in_progress
from worker.jobs.arq_fence import FencedWorker, hide_job_arguments

log = logging.getLogger("worker")

hide_job_arguments()  # the prompt and image bytes never go through repr() for a log line


class WakeableWorker(FencedWorker):
    """arq's ``Worker``, woken by ``WAKE_CHANNEL`` and polling in one round trip (see the module doc)."""

    def __init__(self, *args: Any, upstream_max_concurrent: int = 0, lease_ttl_s: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The fair claim takes a job only when the pool has an upstream stream free for it (shared.queue).
        self.upstream_max_concurrent = upstream_max_concurrent
        self.lease_ttl_s = lease_ttl_s
        self._wake = asyncio.Event()
        self._claimer: Claimer | None = None
        self._woken_ids: list[str] = []  # jobs named by wake-ups since the last poll
        self._read_queue = True  # the next poll reads the queue (see the module doc)

    def wake(self) -> None:
        self._read_queue = True
        self._wake.set()

    def slot_freed(self, was_full: bool) -> None:
        # Only a full worker can have left a due job in the queue; one with a free slot took it.
        if was_full:
            self.wake()

    async def poll(self) -> None:
        if self._claimer is None:
            self._claimer = Claimer(
                self.pool,
                self.queue_name,
                upstream_max_concurrent=self.upstream_max_concurrent,
                lease_ttl_s=self.lease_ttl_s,
            )
        want = self.free_slots if self.allow_pick_jobs else 0
        read_aborts = self.allow_abort_jobs and self.running
        ids, self._woken_ids = self._woken_ids, []
        read_queue, self._read_queue = self._read_queue or not ids, False
        claim = functools.partial(
            self._claimer.claim,
            want=want,
            in_progress_ms=self.in_progress_ms,
            read_limit=self.queue_read_limit,
            read_aborts=read_aborts,
        )
        if read_queue and (want > 0 or read_aborts):
            claimed, aborts = await claim()
        elif not read_queue and want > 0:
            # Jobs this worker cannot take now stay queued: a slot freed later reads the queue.
            claimed, aborts = await claim(ids=ids)
        else:
            claimed, aborts = [], []
        for job_id, score in claimed:
            await self.start_claimed(job_id, score)
        if aborts:
            await self.apply_aborts(aborts)

    async def _keep_in_progress(self) -> None:
        """Renew the in-progress keys of the jobs this worker still runs, every third of their life
        (:func:`shared.queue.renew_in_progress`: a job that ended meanwhile stays ended)."""
        ttl_ms = self.in_progress_ms
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            running = self.running_job_ids()
            if not running:
                continue
            try:
                await renew_in_progress(self.pool, running, ttl_ms)
            except (RedisError, OSError) as exc:
                log.warning("could not renew %d running job(s) (%s); retrying", len(running), exc)

    async def _listen_for_wakeups(self) -> None:
        backoff = Backoff()
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(names.WAKE_CHANNEL)
                    backoff.reset()
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
                await asyncio.sleep(backoff.next())

    async def serve(self) -> None:
        # arq's poll loop, with the timer replaced by "timer or wake-up".
        listener = asyncio.create_task(self._listen_for_wakeups(), name="wake-listener")
        keeper = asyncio.create_task(self._keep_in_progress(), name="in-progress-keeper")
        try:
            while True:
                self._wake.clear()
                try:
                    await self.poll_once()
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
