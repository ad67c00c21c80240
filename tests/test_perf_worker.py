"""The workers' one-round-trip poll claims exactly what arq's own poll would.

``worker/jobs/arq_worker.py`` replaces arq's poll (a WATCH/EXISTS/ZSCORE round trip per queued or
running job) with one script that claims due jobs and reads the abort set. These prove that it
still runs each job once, starts a job that waited for a free slot as soon as one frees (not at
the next fallback poll) and aborts a job whose client went away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import openai
import pytest
from arq.constants import abort_jobs_ss, in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names
from tests.conftest import Gateway, directive


def test_each_job_runs_once_across_workers(gateway: Gateway, tag: str) -> None:
    async def go() -> list[str]:
        client = gateway.aclient()
        try:

            async def one(i: int) -> str:
                stream = await client.chat.completions.create(
                    model="decopy-deepseek-v3",
                    stream=True,
                    messages=[{"role": "user", "content": f"{tag}-{i}\n" + directive(n=5, interval_ms=10)}],
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

            return await asyncio.gather(*(one(i) for i in range(30)))
        finally:
            await client.close()

    texts = asyncio.run(go())
    assert texts == ["".join(f"tok{k} " for k in range(5))] * 30
    creates = [e for e in gateway.sim_entries(tag) if e["kind"] == "create"]
    prompts = sorted(e["entertext"].split("\n")[0] for e in creates)
    assert prompts == sorted(f"{tag}-{i}" for i in range(30))  # each job reached the upstream exactly once


def test_queued_job_starts_when_a_slot_frees(make_gateway: Callable[..., Gateway], tag: str) -> None:
    # One worker, one slot, and a fallback poll far beyond the test: only the wake-up on the
    # first job's end can start the second in time.
    gw = make_gateway({"WORKER_CONCURRENCY": "1", "WORKER_POLL_DELAY": "60"}, workers=1)

    async def go() -> list[float]:
        client = gw.aclient()
        started = time.monotonic()
        try:

            async def one(i: int) -> float:
                resp = await client.chat.completions.create(
                    model="decopy-deepseek-v3",
                    messages=[{"role": "user", "content": f"{tag}-{i}\n" + directive(n=3, interval_ms=200)}],
                )
                assert resp.choices[0].message.content == "tok0 tok1 tok2 "
                return time.monotonic() - started

            return list(await asyncio.gather(one(0), one(1)))
        finally:
            await client.close()

    took = asyncio.run(go())
    assert max(took) < 30, took  # the second did not wait for the 60 s fallback poll
    assert len([e for e in gw.sim_entries(tag) if e["kind"] == "create"]) == 2


def test_withdrawn_job_is_aborted_by_its_worker(make_gateway: Callable[..., Gateway], tag: str) -> None:
    # The fallback poll is far beyond the test: the abort must come from the wake-up and the
    # abort set read in the same script as the claim.
    gw = make_gateway({"WORKER_POLL_DELAY": "60"})

    async def go() -> tuple[str, float]:
        client = gw.aclient()
        redis = Redis.from_url(gw.redis_url)
        try:
            stream = await client.chat.completions.create(
                model="decopy-deepseek-v3",
                stream=True,
                messages=[{"role": "user", "content": f"{tag}\n" + directive(n=300, interval_ms=100)}],
            )
            got = ""
            with pytest.raises(openai.APIError) as raised:
                async for chunk in stream:
                    got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
                    if got == "tok0 ":
                        [key] = await redis.keys(names.job_run_key("*"))
                        job_id = key.decode().rsplit(":", 1)[1]
                        withdrawn = time.monotonic()
                        # What arq's Job.abort does, then the wake-up the API sends with it.
                        await redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
                        await redis.publish(names.WAKE_CHANNEL, b"1")
            return str(getattr(raised.value, "code", None)), time.monotonic() - withdrawn
        finally:
            await client.close()
            await redis.aclose()

    code, took = asyncio.run(go())
    assert code == "interrupted"
    assert took < 20  # the 300 pieces would take 30 s; the 60 s fallback poll played no part


def test_job_arguments_are_never_rendered_for_arq_logs() -> None:
    import arq.worker

    import worker.jobs.arq_worker  # noqa: F401  (installs the replacement)

    class Loud:
        def __repr__(self) -> str:
            raise AssertionError("the job's arguments were rendered")

    assert arq.worker.args_to_string((Loud(),), {"image": Loud()}) == "…"  # type: ignore[attr-defined]


def test_a_new_job_is_found_by_its_id_however_many_run_before_it(
    make_gateway: Callable[..., Gateway], tag: str
) -> None:
    """arq keeps running jobs in the queue, and arq's read of the queue looks at its oldest
    ``queue_read_limit`` entries only (here max(1 × 5, 100) = 100). With more jobs than that
    running across the pool, a new job was beyond what the read saw, and free slots stayed idle
    until old jobs ended. Now the wake-up names the job and the worker claims it by id; a job
    that had to wait for a slot is found by a read that goes on past the running jobs."""
    gw = make_gateway({"WORKER_CONCURRENCY": "1", "WORKER_POLL_DELAY": "60"}, workers=1)
    fakes = [f"{tag}-running-{i}" for i in range(150)]

    async def go() -> list[str]:
        redis = Redis.from_url(gw.redis_url)
        try:
            old = timestamp_ms() - 60_000
            async with redis.pipeline(transaction=False) as pipe:  # 150 jobs other workers run
                for job_id in fakes:
                    pipe.zadd(names.QUEUE, {job_id: old})
                    pipe.set(in_progress_key_prefix + job_id, b"1", px=120_000)
                await pipe.execute()
            client = gw.aclient()
            try:

                async def one(i: int) -> str:  # the second waits for the one slot: found by a read
                    resp = await client.chat.completions.create(
                        model="decopy-deepseek-v3",
                        messages=[{"role": "user", "content": f"{tag}-{i}\n" + directive(n=2, interval_ms=100)}],
                    )
                    return resp.choices[0].message.content or ""

                return list(await asyncio.wait_for(asyncio.gather(one(0), one(1)), 20))
            finally:
                await client.close()
                await redis.zrem(names.QUEUE, *fakes)
                await redis.delete(*(in_progress_key_prefix + job_id for job_id in fakes))
        finally:
            await redis.aclose()

    assert asyncio.run(go()) == ["tok0 tok1 "] * 2
