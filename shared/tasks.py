"""Stopping a background task: one helper for every poller and renewer.

``task.cancel()`` then ``await task`` under ``suppress(CancelledError)`` (what each module wrote
for itself) also swallows a cancellation aimed at the caller while it waits, so a shutdown that
cancels the caller could go on as if nothing happened. :func:`stop_task` waits through
``asyncio.gather``: the task's own CancelledError is its result, the caller's still propagates.
"""

from __future__ import annotations

import asyncio


async def stop_task(task: asyncio.Task[object] | asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any and not done) and wait until it has ended; its outcome is dropped."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
