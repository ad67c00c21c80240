"""The fair queue's scripts on a real Redis, driven in-process: the exact order jobs are taken in.

The end-to-end tests (tests/test_teams_fair.py) show the effect through the API and workers;
these pin the algorithm itself: start-time fair queuing over keys, weights, withdrawals, the
upstream gate and redelivery after a worker died.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis

from shared import names
from shared.queue import Claimer, JobQueue

T = TypeVar("T")


def run(redis_url: str, body: Callable[[Redis], Awaitable[T]]) -> T:
    async def go() -> T:
        r = Redis.from_url(redis_url)  # emptied by the fixture (tests/unit/conftest.py)
        try:
            return await body(r)
        finally:
            await r.aclose()

    return asyncio.run(go())


async def enqueue(q: JobQueue, key: str | None, n: int, tag: str) -> list[str]:
    ids = [f"{tag}{i:03d}" for i in range(n)]
    for job_id in ids:
        assert await q.enqueue(job_id, {"n": job_id}, key=key)
    return ids


async def take(c: Claimer, want: int, **kw: Any) -> list[str]:
    claimed, _ = await c.claim(want=want, in_progress_ms=60_000, read_limit=100, read_aborts=False, **kw)
    return [job_id for job_id, _ in claimed]


async def finish(r: Redis, job_ids: list[str]) -> None:
    """What arq does when a job ends: its queue entry and in-progress key go."""
    for job_id in job_ids:
        await r.zrem(names.QUEUE, job_id)
        await r.delete("arq:in-progress:" + job_id)


def test_a_key_that_queues_later_is_not_stuck_behind_a_long_line(redis_url: str) -> None:
    async def body(r: Redis) -> list[str]:
        q, c = JobQueue(r, max_queue=1000, expires_s=60), Claimer(r)
        a = await enqueue(q, "key_a", 100, "a")
        first = await take(c, 2)  # two slots: A's first two start
        assert first == a[:2]
        b = await enqueue(q, "key_b", 5, "b")
        order: list[str] = []
        running = first
        while True:  # one job ends, one starts, as with two busy upstream slots
            await finish(r, running[:1])
            running = running[1:]
            got = await take(c, 1)
            if not got:
                break
            order += got
            running += got
        assert sorted(order) == sorted(a[2:] + b)  # every job taken once
        return order

    order = run(redis_url, body)
    positions = [order.index(f"b{i:03d}") for i in range(5)]
    # B's jobs alternate with A's from the next free slot on (A's line is first come, first served).
    assert positions == [0, 2, 4, 6, 8] or positions == [1, 3, 5, 7, 9], positions
    a_order = [j for j in order if j.startswith("a")]
    assert a_order == sorted(a_order)


def test_weights_share_out_three_to_one(redis_url: str) -> None:
    async def body(r: Redis) -> list[str]:
        await r.hset(names.FQ_WEIGHTS, "key_a", "3")  # type: ignore[misc]  # redis-py's sync/async union
        q, c = JobQueue(r, max_queue=1000, expires_s=60), Claimer(r)
        await enqueue(q, "key_a", 90, "a")
        await enqueue(q, "key_b", 90, "b")
        return [j for _ in range(80) for j in await take(c, 1)]

    order = run(redis_url, body)
    for window in (order[:40], order[:80], order[20:60]):
        a = sum(j.startswith("a") for j in window)
        assert abs(a / (len(window) - a) - 3) <= 0.3, (a, len(window))


def test_an_idle_key_saves_no_credit_and_withdrawn_jobs_cost_nothing(redis_url: str) -> None:
    async def body(r: Redis) -> tuple[list[str], list[str]]:
        q, c = JobQueue(r, max_queue=1000, expires_s=60), Claimer(r)
        await enqueue(q, "key_a", 10, "a")
        assert await take(c, 10) == [f"a{i:03d}" for i in range(10)]  # A alone: served 10
        b = await enqueue(q, "key_b", 3, "b")
        a2 = await enqueue(q, "key_a", 3, "x")
        interleaved = await take(c, 6)
        # Withdrawn while waiting: C's next job is not pushed back for jobs it never got.
        c_ids = await enqueue(q, "key_c", 4, "c")
        for job_id in c_ids[:3]:
            assert await q.cancel(job_id, key="key_c") is True
        d = await enqueue(q, "key_d", 2, "d")
        later = await take(c, 3)
        assert set(interleaved) == set(b + a2) and set(later) == {c_ids[3], *d}
        return interleaved, later

    interleaved, later = run(redis_url, body)
    # A's ten earlier jobs do not count against it: B and A alternate (A was idle when B came).
    assert [j[0] for j in interleaved] in (list("bxbxbx"), list("xbxbxb"))
    assert later[0] in ("c003", "d000")


def test_the_upstream_gate_holds_jobs_in_the_fair_queue(redis_url: str) -> None:
    async def body(r: Redis) -> None:
        q, c = JobQueue(r, max_queue=1000, expires_s=60), Claimer(r, upstream_max_concurrent=2, lease_ttl_s=30)
        await enqueue(q, "key_a", 5, "a")
        assert await take(c, 10) == ["a000", "a001"]  # only two upstream streams: two leave the queue
        assert await take(c, 10) == []
        assert set(await r.zrange(names.UPSTREAM_LEASES, 0, -1)) == {b"a000", b"a001"}
        await r.zrem(names.UPSTREAM_LEASES, "a000")  # one upstream call ended
        assert await take(c, 10) == ["a002"]
        # The doctor skips the lines and the gate.
        assert await q.enqueue("doc", None, function=names.DOCTOR_FUNCTION, capped=False)
        assert await take(c, 10) == ["doc"]

    run(redis_url, body)


def test_a_job_whose_worker_died_is_taken_again_first(redis_url: str) -> None:
    async def body(r: Redis) -> None:
        q, c = JobQueue(r, max_queue=1000, expires_s=60), Claimer(r)
        await enqueue(q, "key_a", 3, "a")
        claimed, _ = await c.claim(want=1, in_progress_ms=60_000, read_limit=100, read_aborts=False)
        assert [j for j, _ in claimed] == ["a000"]
        assert await take(c, 0) == []
        await r.delete("arq:in-progress:a000")  # its in-progress key ran out: the worker is gone
        assert await take(c, 1, ids=["x"]) == ["a001"]  # a poll after a wake-up naming a job: not seen yet
        assert await take(c, 1) == ["a000"]  # a full poll puts it back at the front of its key's line
        assert await take(c, 2) == ["a002"]
        await finish(r, ["a000", "a001", "a002"])
        assert await take(c, 5) == []
        assert await r.zcard(names.FQ_TAKEN) == 0  # ended jobs leave the taken set at a full poll

    run(redis_url, body)


def test_cap_and_cancel_of_a_running_job(redis_url: str) -> None:
    async def body(r: Redis) -> None:
        q, c = JobQueue(r, max_queue=3, expires_s=60), Claimer(r)
        await enqueue(q, "key_a", 3, "a")
        assert not await q.enqueue("over", {}, key="key_a")  # MAX_QUEUE holds, fair or not
        assert await take(c, 1) == ["a000"]
        assert await q.cancel("a000") is False  # running: aborted, not withdrawn
        assert await q.cancel("a001", key="key_a") is True
        assert await q.cancel("a002") is True  # key not known: it stays in its line, never taken
        assert await take(c, 5) == []
        assert await r.llen(names.fq_line("key_a")) == 0  # type: ignore[misc]

    run(redis_url, body)
