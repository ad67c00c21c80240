"""The fence around arq's private parts (see :mod:`shared.fence`): the worker's poll and its slots.

arq's ``Worker`` finds jobs only by its poll timer, with four round trips per running job per
poll (see :mod:`worker.jobs.arq_worker`). To poll in one script and on a wake-up instead, the
gateway's worker replaces arq's poll and start-up loop, and so touches arq's slot bookkeeping
(``sem``, ``job_counter``, ``tasks``), its pool slot (``_pool``), the in-progress key's life
(``in_progress_timeout_s``, short and renewed: see :mod:`worker.jobs.arq_worker`) and one
private method.
:class:`FencedWorker` does all of that and offers hooks (:meth:`FencedWorker.serve`,
:meth:`FencedWorker.poll_once`, :meth:`FencedWorker.slot_freed`, :meth:`FencedWorker.start_claimed`,
...) that use arq's private parts so its subclass need not. :func:`hide_job_arguments` is the one
module-level patch.
"""

from __future__ import annotations

import logging
from typing import Any

import arq.worker
from arq.connections import create_pool
from arq.constants import abort_jobs_ss
from arq.worker import Worker

from shared.fence import PrivateUse

log = logging.getLogger("worker")

_WORKER = "arq.worker:Worker"

PRIVATE_USES = (
    PrivateUse(
        "arq",
        f"{_WORKER}._release_sem_dec_counter_on_complete",
        "a full worker that frees a slot wakes itself (no public hook when a job ends)",
        params=("self",),
    ),
    PrivateUse(
        "arq",
        f"{_WORKER}.main",
        "arq's start-up, then our loop: one claim script per wake-up or timer (arq's: 4 round trips per running job)",
        params=("self",),
    ),
    PrivateUse("arq", f"{_WORKER}()._pool", "main() opens the pool as arq's does, where arq keeps it"),
    PrivateUse("arq", f"{_WORKER}().sem", "a claimed job takes a slot as arq's start_jobs does"),
    PrivateUse("arq", f"{_WORKER}().job_counter", "the free slots, counted as arq counts them"),
    PrivateUse(
        "arq", f"{_WORKER}().tasks", "run_job tasks registered and reaped as arq's poll does; running ones renewed"
    ),
    PrivateUse(
        "arq",
        f"{_WORKER}().in_progress_timeout_s",
        "a running job's in-progress key lives ORPHAN_JOB_SECONDS, renewed (arq: the job's whole timeout)",
    ),
    PrivateUse("arq", f"{_WORKER}().job_tasks", "a job named in the abort set is cancelled as arq does"),
    PrivateUse("arq", f"{_WORKER}().aborting_tasks", "marks a cancelled job aborted, as arq does"),
    PrivateUse(
        "arq",
        "arq.worker:args_to_string",
        "run_job's INFO line renders every job's arguments (the prompt, image bytes) before logging drops it",
        params=("args", "kwargs"),
    ),
)


def _arguments_not_shown(args: Any, kwargs: Any) -> str:
    return "…"


def hide_job_arguments() -> None:
    """Stop arq's ``run_job`` from rendering each job's arguments for a log line.

    It builds ``repr()`` of them before the logger can drop the line (``shared.logs`` keeps arq at
    WARNING: the arguments hold the prompt). A chat job's argument holds the prompt and the image
    bytes: 56 ms of CPU for a 5 MB image, on the event loop that serves every other stream of
    this worker. The line keeps its place, without them.
    """
    arq.worker.args_to_string = _arguments_not_shown  # type: ignore[attr-defined]


class FencedWorker(Worker):
    """arq's ``Worker`` with its poll loop replaced by hooks (see the module docstring).

    A subclass implements :meth:`serve` (the loop, run after start-up) and :meth:`poll` (one
    poll); :meth:`slot_freed` is called when a job ends. ``in_progress_seconds``: how long a
    claimed job's in-progress key lives (arq's: the job's whole timeout), for a worker that
    renews the keys of its running jobs (:meth:`running_job_ids`).
    """

    def __init__(self, *args: Any, in_progress_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if in_progress_seconds is not None:
            self.in_progress_timeout_s = in_progress_seconds

    # --- hooks for the subclass -------------------------------------------------------------

    async def serve(self) -> None:
        """Run until cancelled, polling (:meth:`poll`) when there may be work."""
        raise NotImplementedError

    async def poll(self) -> None:
        """One poll's claim and abort steps (:meth:`poll_once` runs it, then reaps and beats)."""
        raise NotImplementedError

    def slot_freed(self, was_full: bool) -> None:
        """A job ended; ``was_full``: no slot was free before it did."""

    @property
    def free_slots(self) -> int:
        return self.max_jobs - self.job_counter

    @property
    def in_progress_ms(self) -> int:
        """How long a claimed job's in-progress key lives, in milliseconds."""
        return int(self.in_progress_timeout_s * 1000)

    def running_job_ids(self) -> list[str]:
        """The jobs this worker runs now (their tasks not done)."""
        return [job_id for job_id, t in self.tasks.items() if not t.done()]

    async def start_claimed(self, job_id: str, score: int) -> None:
        """Run a job this worker claimed: the part of arq's ``start_jobs`` after its claim. The
        semaphore (released when the job ends) does not block: at most ``free_slots`` were claimed."""
        await self.sem.acquire()
        self.job_counter += 1
        t = self.loop.create_task(self.run_job(job_id, score))
        t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = t

    async def apply_aborts(self, job_ids: list[str]) -> None:
        """Cancel the running jobs among ``job_ids`` (the abort set): the rest of arq's
        ``_cancel_aborted_jobs`` once the set has been read."""
        aborted: set[str] = set()
        for job_id in job_ids:
            task = self.job_tasks.get(job_id)
            if task is not None:
                aborted.add(job_id)
                task.cancel()
        if aborted:
            self.aborting_tasks.update(aborted)
            await self.pool.zrem(abort_jobs_ss, *aborted)

    @property
    def running(self) -> bool:
        """Whether any job of this worker runs now."""
        return bool(self.job_tasks)

    async def poll_once(self) -> None:
        """What arq's ``_poll_iteration`` does, with :meth:`poll` for its claim and abort steps."""
        await self.poll()
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                t.result()  # as arq does: an error in run_job surfaces here
        await self.heart_beat()

    # --- arq's private parts ------------------------------------------------------------------

    def _release_sem_dec_counter_on_complete(self) -> None:
        was_full = self.job_counter >= self.max_jobs
        super()._release_sem_dec_counter_on_complete()
        self.slot_freed(was_full)

    async def main(self) -> None:
        # Same as arq's Worker.main up to the poll loop, which is :meth:`serve`.
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
        await self.serve()
