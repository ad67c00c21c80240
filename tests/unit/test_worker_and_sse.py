"""The worker's arq loop and the API's SSE response, each in this process: the pieces that sit
on a library's private parts (``worker.jobs.arq_fence``, ``api.http.sse``) doing their job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import func
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from api.http.sse import EventSourceResponse
from shared import names
from shared.queue import JobQueue, new_job_id
from tests.unit.conftest import arun
from worker.jobs.arq_worker import WakeableWorker


def test_a_wake_up_starts_the_job_without_waiting_for_the_poll_timer(redis_url: str) -> None:
    """The poll timer is an hour: only the wake-up naming the job (enqueue's) can start it."""

    async def body() -> None:
        done: asyncio.Queue[str] = asyncio.Queue()

        async def job(ctx: dict[str, Any], value: str) -> None:
            await done.put(value)

        worker = WakeableWorker(
            functions=[func(job, name=names.CHAT_FUNCTION)],
            redis_settings=RedisSettings.from_dsn(redis_url),
            queue_name=names.QUEUE,
            max_jobs=2,
            poll_delay=3600,
            keep_result=0,
            handle_signals=False,
        )
        running = asyncio.create_task(worker.main())
        redis = Redis.from_url(redis_url)
        try:
            # The worker's first poll (at start) finds nothing; wait until it listens for wake-ups.
            async with asyncio.timeout(10):
                while (await redis.pubsub_numsub(names.WAKE_CHANNEL))[0][1] == 0:
                    await asyncio.sleep(0.01)
            queue = JobQueue(redis, max_queue=10, expires_s=60)
            for value in ("first", "second", "third"):  # three jobs, two slots: a freed slot wakes it
                assert await queue.enqueue(new_job_id(), value)
            async with asyncio.timeout(10):
                got = {await done.get() for _ in range(3)}
            assert got == {"first", "second", "third"}
            async with asyncio.timeout(10):  # arq finishes each job's bookkeeping
                await asyncio.gather(*worker.tasks.values())
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await worker.pool.aclose()  # (arq's own close() calls redis-py's deprecated close())
            await redis.aclose()

    arun(body())


def test_a_running_job_keeps_its_short_lived_in_progress_key(redis_url: str) -> None:
    """With ``in_progress_seconds`` (ORPHAN_JOB_SECONDS) the key outlives it only while renewed:
    a running job's key is renewed (its time to live goes back up) and never lapses."""

    async def body() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def job(ctx: dict[str, Any], value: str) -> None:
            started.set()
            await release.wait()

        worker = WakeableWorker(
            functions=[func(job, name=names.CHAT_FUNCTION)],
            redis_settings=RedisSettings.from_dsn(redis_url),
            queue_name=names.QUEUE,
            max_jobs=1,
            poll_delay=3600,
            keep_result=0,
            handle_signals=False,
            in_progress_seconds=0.6,
        )
        running = asyncio.create_task(worker.main())
        redis = Redis.from_url(redis_url)
        try:
            async with asyncio.timeout(10):
                while (await redis.pubsub_numsub(names.WAKE_CHANNEL))[0][1] == 0:
                    await asyncio.sleep(0.01)
            job_id = new_job_id()
            assert await JobQueue(redis, max_queue=10, expires_s=60).enqueue(job_id, "x")
            async with asyncio.timeout(10):
                await started.wait()
            key = in_progress_key_prefix + job_id
            lowest = await redis.pttl(key)
            assert 0 < lowest <= 600
            renewals = 0
            async with asyncio.timeout(10):
                while renewals < 3:  # three renewals: more than the key's own life has passed
                    ttl = await redis.pttl(key)
                    assert ttl > 0, "the running job's in-progress key lapsed"
                    if ttl > lowest:
                        renewals += 1
                    lowest = ttl
                    await asyncio.sleep(0.02)
            release.set()
            async with asyncio.timeout(10):
                await asyncio.gather(*worker.tasks.values())
        finally:
            release.set()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await worker.pool.aclose()
            await redis.aclose()

    arun(body())


def _app(pieces: list[bytes], ping: float) -> Starlette:
    async def events(request: Request) -> EventSourceResponse:
        async def generate() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return EventSourceResponse(generate(), ping=ping)

    return Starlette(routes=[Route("/events", events)])


def test_sse_response_sends_every_event_in_order_and_ends() -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    with TestClient(_app(pieces, ping=15)) as client, client.stream("GET", "/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert b"".join(resp.iter_bytes()) == b"".join(pieces)


def test_sse_response_pings_while_the_body_is_silent() -> None:
    gate = asyncio.Event()

    async def events(request: Request) -> EventSourceResponse:
        async def generate() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await gate.wait()

        return EventSourceResponse(generate(), ping=0.05)

    app = Starlette(routes=[Route("/events", events)])
    with TestClient(app) as client, client.stream("GET", "/events") as resp:
        seen = b""
        for chunk in resp.iter_bytes():
            seen += chunk
            if b": ping" in seen:
                break
        assert seen.startswith(b"data: first\n\n") and b": ping" in seen
