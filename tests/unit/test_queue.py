"""The queue protocol (shared.queue) against a real Redis: enqueue, wake, claim, cancel, start once."""

from __future__ import annotations

import asyncio

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.jobs import deserialize_job
from redis.asyncio import Redis

from shared import names
from shared.queue import Claimer, JobQueue, StartOnce, new_job_id, renew_in_progress
from tests.unit.conftest import arun

JOB = {"prompt": "hi"}


def _queue(redis: Redis, max_queue: int = 10) -> JobQueue:
    return JobQueue(redis, max_queue=max_queue, expires_s=60)


def test_enqueue_stores_arqs_job_and_wakes_the_workers_with_its_id(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        pubsub = redis.pubsub()
        await pubsub.subscribe(names.WAKE_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        job_id = new_job_id()
        assert await _queue(redis).enqueue(job_id, JOB)
        data = await redis.get(job_key_prefix + job_id)
        assert data is not None
        job = deserialize_job(data)  # arq's own reader takes it
        assert job.function == names.CHAT_FUNCTION and job.args == (JOB,)
        assert await redis.zscore(names.QUEUE, job_id) is not None
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None and message["data"] == job_id.encode()
        await pubsub.aclose()
        await redis.aclose()

    arun(body())


def test_the_cap_refuses_chat_jobs_but_not_uncapped_ones(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        queue = _queue(redis, max_queue=2)
        assert await queue.enqueue(new_job_id(), JOB)
        assert await queue.enqueue(new_job_id(), JOB)
        assert not await queue.enqueue(new_job_id(), JOB)
        assert await queue.depth() == 2
        doctor = new_job_id()
        assert await queue.enqueue(doctor, None, function=names.DOCTOR_FUNCTION, capped=False)
        job = deserialize_job(await redis.get(job_key_prefix + doctor))
        assert job.function == names.DOCTOR_FUNCTION and job.args == ()
        await redis.aclose()

    arun(body())


def test_claim_takes_due_jobs_once_and_marks_them_in_progress(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        queue = _queue(redis)
        ids = [new_job_id() for _ in range(3)]
        for job_id in ids:
            await queue.enqueue(job_id, JOB)
        claimer = Claimer(redis)
        claimed, aborts = await claimer.claim(want=2, in_progress_ms=10_000, read_limit=1, read_aborts=False)
        first = {c[0] for c in claimed}
        assert len(claimed) == 2 and first <= set(ids) and aborts == []  # read page by page (1 a page)
        for job_id in first:
            assert await redis.exists(in_progress_key_prefix + job_id)
        again, _ = await claimer.claim(want=5, in_progress_ms=10_000, read_limit=10, read_aborts=False)
        assert {c[0] for c in again} == set(ids) - first  # running jobs stay queued, never claimed twice
        assert await queue.depth() == 3
        await redis.aclose()

    arun(body())


def test_a_wake_up_naming_a_job_does_not_let_it_jump_the_fair_order(redis_url: str) -> None:
    # The fair queue decides which job starts (tests/unit/test_teams_fair_order.py), whatever
    # job a wake-up named: within one key, first come, first served.
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        queue = _queue(redis)
        first, second = new_job_id(), new_job_id()
        await queue.enqueue(first, JOB, key="key_a")
        await queue.enqueue(second, JOB, key="key_a")
        claimer = Claimer(redis)
        claimed, _ = await claimer.claim(
            want=1, in_progress_ms=10_000, read_limit=10, read_aborts=False, ids=[second, "no-such-job"]
        )
        assert [c[0] for c in claimed] == [first]
        assert not await redis.exists(in_progress_key_prefix + second)
        await redis.aclose()

    arun(body())


def test_cancel_withdraws_a_waiting_job_and_aborts_a_running_one(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        queue = _queue(redis)
        waiting, running = new_job_id(), new_job_id()
        await queue.enqueue(running, JOB)  # first in line: the claim below takes it
        await queue.enqueue(waiting, JOB)
        claimer = Claimer(redis)
        await claimer.claim(want=1, in_progress_ms=10_000, read_limit=10, read_aborts=False, ids=[running])

        assert await queue.cancel(waiting) is True
        assert not await redis.exists(job_key_prefix + waiting)
        assert await redis.zscore(names.QUEUE, waiting) is None

        assert await queue.cancel(running) is False
        assert await redis.zscore(names.QUEUE, running) is None  # never claimed again
        assert await redis.zscore(abort_jobs_ss, running) is not None
        _, aborts = await claimer.claim(want=0, in_progress_ms=10_000, read_limit=10, read_aborts=True)
        assert aborts == [running]

        assert await queue.cancel(new_job_id()) is False  # finished or unknown: nothing to do
        await redis.aclose()

    arun(body())


def test_a_job_starts_upstream_at_most_once(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        job_id = new_job_id()
        pubsub = redis.pubsub()
        await pubsub.subscribe(names.job_channel(job_id))
        await pubsub.get_message(timeout=1)
        start = StartOnce(redis)
        assert await start(job_id, b"start") == (1, None)  # one listener got the start message
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None and message["data"] == b"start"
        assert await start(job_id, b"start") == (-1, b"claimed")  # a second delivery is refused
        await redis.set(names.job_run_key(job_id), b"text")
        assert await start(job_id, b"start") == (-1, b"text")
        await pubsub.aclose()

        nobody = new_job_id()
        assert await start(nobody, b"start") == (0, None)  # the client's API already left
        await redis.aclose()

    arun(body())


def test_concurrent_claims_never_hand_out_one_job_twice(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        queue = _queue(redis, max_queue=100)
        ids = [new_job_id() for _ in range(30)]
        for job_id in ids:
            await queue.enqueue(job_id, JOB)
        clients = [Redis.from_url(redis_url) for _ in range(4)]
        results = await asyncio.gather(
            *(Claimer(c).claim(want=10, in_progress_ms=10_000, read_limit=5, read_aborts=False) for c in clients)
        )
        for client in clients:
            await client.aclose()
        taken = [job for claimed, _ in results for job, _ in claimed]
        assert sorted(taken) == sorted(ids) and len(set(taken)) == len(ids)
        await redis.aclose()

    arun(body())


def test_renewal_extends_running_jobs_and_never_revives_an_ended_one(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        queue = _queue(redis)
        running, ended = new_job_id(), new_job_id()
        for job_id in (running, ended):
            await queue.enqueue(job_id, JOB)
        await Claimer(redis).claim(want=2, in_progress_ms=1_000, read_limit=10, read_aborts=False, ids=[running, ended])
        await redis.delete(in_progress_key_prefix + ended)  # arq deletes it when the job ends
        await renew_in_progress(redis, [running, ended], 60_000)
        assert 1_000 < await redis.pttl(in_progress_key_prefix + running) <= 60_000
        assert not await redis.exists(in_progress_key_prefix + ended)
        await redis.aclose()

    arun(body())
