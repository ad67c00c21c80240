"""The API's handle on the job queue: :class:`shared.queue.JobQueue` (enqueue, cancel, depth).

The protocol itself (every script, the deliveries-and-runs rule) lives in :mod:`shared.queue`,
beside the worker's claim and start; this name stays where the API's relay pieces look for it.
"""

from __future__ import annotations

from shared.queue import JobQueue, new_job_id

__all__ = ["JobQueue", "new_job_id"]
