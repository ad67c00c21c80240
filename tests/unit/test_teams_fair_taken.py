"""The full poll's look at the jobs taken (shared/queue.py, ``_CLAIM`` step 1), on a real Redis.

A full poll runs at every slot freed in a full worker and every upstream lease freed, so it must
not cost a look per running job: it looks at the jobs whose in-progress key may have run out
(taken, or last seen running, over ``in_progress_ms`` ago) and at the ``TAKEN_LOOKS`` oldest.
What a poll looked at is counted from Redis' own ``INFO commandstats`` (one PTTL per job looked
at that is still queued); what it did is read from the fair queue's state.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared import names
from shared.queue import TAKEN_LOOKS, Claimer, JobQueue, renew_in_progress
from tests.unit.conftest import arun


async def pttl_calls(r: Redis) -> int:
    stats: dict[str, Any] = await r.info("commandstats")
    return int(stats.get("cmdstat_pttl", {"calls": 0})["calls"])


async def full_poll(r: Redis, c: Claimer, *, want: int, life_ms: int) -> tuple[list[str], int]:
    """One full poll (no ids): the jobs it took, and how many taken jobs it looked at."""
    before = await pttl_calls(r)
    claimed, _ = await c.claim(want=want, in_progress_ms=life_ms, read_limit=100, read_aborts=False)
    return [j for j, _ in claimed], await pttl_calls(r) - before


async def start(r: Redis, n: int, *, life_ms: int) -> tuple[JobQueue, Claimer, list[str]]:
    """``n`` jobs of one key queued and taken by one claim (so all share one score)."""
    q, c = JobQueue(r, max_queue=10_000, expires_s=600), Claimer(r)
    ids = [f"a{i:04d}" for i in range(n)]
    for job_id in ids:
        assert await q.enqueue(job_id, {"n": job_id}, key="key_a")
    claimed, _ = await c.claim(want=n, in_progress_ms=life_ms, read_limit=100, read_aborts=False)
    assert [j for j, _ in claimed] == ids
    return q, c, ids


async def wait_for(check: Any, what: str) -> None:
    for _ in range(3000):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_full_poll_looks_at_the_same_few_jobs_whatever_runs(redis_url: str) -> None:
    """Fresh jobs (taken under in_progress_ms ago) are not looked at, beyond the few oldest: with 20
    or 400 running, a full poll looks at TAKEN_LOOKS; a fresh job whose key went is not seen."""

    async def body() -> None:
        r = Redis.from_url(redis_url)
        try:
            for running in (20, 400):
                await r.flushall()
                _, c, ids = await start(r, running, life_ms=60_000)
                await r.delete(in_progress_key_prefix + ids[-1])  # the newest: its key went early
                taken, looked = await full_poll(r, c, want=5, life_ms=60_000)
                assert (taken, looked) == ([], TAKEN_LOOKS), running
                assert await r.llen(names.fq_line("key_a")) == 0  # not put back
                assert await r.zscore(names.FQ_TAKEN, f"key_a {ids[-1]}") is not None
        finally:
            await r.aclose()

    arun(body())


def test_an_orphan_is_delivered_again_once_its_key_ran_out_and_live_jobs_are_put_off(redis_url: str) -> None:
    """A job whose worker died (its key ran out: in_progress_ms since taken) is put back and taken
    by the next full poll, even among more than TAKEN_LOOKS running; the running ones, renewed by
    their worker, are looked at then and not again until their keys, as seen, would run out."""
    life = 400  # in_progress_ms, as every worker passes it (ORPHAN_JOB_SECONDS)
    running = 3 * TAKEN_LOOKS

    async def body() -> None:
        r = Redis.from_url(redis_url)
        try:
            _, c, ids = await start(r, running, life_ms=life)
            orphan, live = ids[-1], ids[:-1]  # the orphan sorts last among members of one score
            taken_at = await r.zscore(names.FQ_TAKEN, f"key_a {orphan}")
            assert taken_at is not None
            await renew_in_progress(r, live, 5_000)  # their worker lives (renews); the orphan's does not

            async def orphan_due() -> bool:
                gone = not await r.exists(in_progress_key_prefix + orphan)
                return gone and timestamp_ms() > taken_at + life

            await wait_for(orphan_due, "the orphan's in-progress key to run out")
            taken, looked = await full_poll(r, c, want=1, life_ms=life)
            assert taken == [orphan]  # put back at the front of its key's line, and taken again
            assert looked == running  # every job taken over in_progress_ms ago was due
            scores = [await r.zscore(names.FQ_TAKEN, f"key_a {j}") for j in live]
            assert all(s is not None and s > taken_at + 1000 for s in scores)  # put off, by their keys' PTTL

            _, looked = await full_poll(r, c, want=0, life_ms=life)
            assert looked == TAKEN_LOOKS  # the renewed ones are not looked at again, but the oldest few

            await renew_in_progress(r, live, 60_000)  # renewed again, as their worker does
            seen_until = max(s for s in scores if s is not None) + life  # their keys' end, as last seen

            async def seen_end_passed() -> bool:
                return bool(timestamp_ms() > seen_until)

            await wait_for(seen_end_passed, "the renewed keys' end as last seen")
            _, looked = await full_poll(r, c, want=0, life_ms=life)
            assert looked == running  # due again: all looked at
            # none of the renewed jobs goes back to its line; the orphan, taken again and not
            # renewed by anyone since, does
            assert await r.lrange(names.fq_line("key_a"), 0, -1) == [orphan.encode()]
        finally:
            await r.aclose()

    arun(body())
