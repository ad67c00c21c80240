"""shared.tasks.stop_task: the task ends, and a cancellation aimed at the caller is not swallowed."""

from __future__ import annotations

import asyncio

import pytest

from shared.tasks import stop_task
from tests.unit.conftest import arun


def test_stop_task_ends_the_task_and_tolerates_none_and_done() -> None:
    arun(_stop_task_ends_the_task_and_tolerates_none_and_done())


async def _stop_task_ends_the_task_and_tolerates_none_and_done() -> None:
    ran = asyncio.Event()

    async def poller() -> None:
        ran.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(poller())
    await ran.wait()
    await stop_task(task)
    assert task.cancelled()
    await stop_task(task)  # already over: nothing happens
    await stop_task(None)


def test_a_task_that_failed_is_stopped_quietly() -> None:
    arun(_a_task_that_failed_is_stopped_quietly())


async def _a_task_that_failed_is_stopped_quietly() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.gather(task, return_exceptions=True)
    await stop_task(task)  # its error is its own outcome, not the caller's


def test_the_callers_cancellation_still_propagates() -> None:
    arun(_the_callers_cancellation_still_propagates())


async def _the_callers_cancellation_still_propagates() -> None:
    """The caller is cancelled while it waits for a task slow to stop: it must end cancelled
    (the suppress(CancelledError) it replaces would have let it run on)."""
    stopping = asyncio.Event()
    release = asyncio.Event()
    after_stop: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await release.wait()  # takes its time to wind down
            raise

    inner = asyncio.create_task(stubborn())
    await asyncio.sleep(0)

    async def caller() -> None:
        await stop_task(inner)
        after_stop.append("went on")

    outer = asyncio.create_task(caller())
    await stopping.wait()
    outer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert after_stop == []
    await asyncio.gather(inner, return_exceptions=True)
    assert inner.cancelled()
