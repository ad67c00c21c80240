"""The fair queue's state in Redis after the claim was made cheaper (shared.queue): where the clock
lives (and the clock of an older version read after an upgrade), a line that keeps its order when
its head is taken, and the upstream gate counting only the leases that have not run out."""

from __future__ import annotations

from redis.asyncio import Redis

from shared import names
from shared.queue import Claimer, JobQueue
from tests.unit.conftest import arun
from tests.unit.test_teams_fair_order import enqueue, take


def test_a_line_keeps_its_order_and_the_clock_moves_to_the_start_time_taken(redis_url: str) -> None:
    async def body() -> None:
        r = Redis.from_url(redis_url)
        q, c = JobQueue(r, max_queue=100, expires_s=60), Claimer(r)
        a = await enqueue(q, "key_a", 3, "a")
        b = await enqueue(q, "key_b", 1, "b")
        assert await take(c, 1) == ["a000"]  # A and B both start at 0 (a tie: the key ids decide)
        assert await r.lrange(names.fq_line("key_a"), 0, -1) == [x.encode() for x in a[1:]]
        assert await r.zscore(names.FQ_KEYS, "key_a") == 1.0  # A moved on by 1 / weight
        assert await r.hget(names.FQ_FINISH, "") == b"0"  # V: the start time taken
        assert await take(c, 1) == b  # B's only job: its line empties, its finish time is kept
        assert await r.zrange(names.FQ_KEYS, 0, -1) == [b"key_a"]
        assert float(await r.hget(names.FQ_FINISH, "key_b")) == 1.0
        assert await take(c, 5) == a[1:]
        assert await r.exists(names.fq_line("key_a"), names.FQ_KEYS) == 0
        assert float(await r.hget(names.FQ_FINISH, "")) == 2.0
        assert float(await r.hget(names.FQ_FINISH, "key_a")) == 3.0
        await r.aclose()

    arun(body())


def test_the_clock_of_an_older_version_is_read_until_a_job_is_taken(redis_url: str) -> None:
    async def body() -> None:
        r = Redis.from_url(redis_url)
        q, c = JobQueue(r, max_queue=100, expires_s=60), Claimer(r)
        await r.set(names.FQ_CLOCK, "100.5")  # where an older version kept V
        await r.hset(names.FQ_FINISH, "key_old", "120")
        await enqueue(q, "key_new", 1, "n")
        await enqueue(q, "key_old", 1, "o")
        # A new key starts at V (not at 0, which would let it go before every key for a long while)
        assert await r.zscore(names.FQ_KEYS, "key_new") == 100.5
        assert await r.zscore(names.FQ_KEYS, "key_old") == 120.0  # max(V, F_key)
        assert await take(c, 1) == ["n000"]
        assert await r.hget(names.FQ_FINISH, "") == b"100.5"  # V's place from now on
        await r.aclose()

    arun(body())


def test_the_gate_counts_only_leases_that_have_not_run_out(redis_url: str) -> None:
    async def body() -> None:
        r = Redis.from_url(redis_url)
        q, c = JobQueue(r, max_queue=100, expires_s=60), Claimer(r, upstream_max_concurrent=2, lease_ttl_s=30)
        await enqueue(q, "key_a", 3, "a")
        seconds, micros = await r.time()
        now_ms = seconds * 1000 + micros // 1000
        # one lease of a worker that died (ran out a second ago), one live
        await r.zadd(names.UPSTREAM_LEASES, {"dead": now_ms - 1000, "live": now_ms + 60_000})
        assert await take(c, 5) == ["a000"]  # one stream free: the dead one's does not count
        assert await take(c, 5) == []
        leases = await r.zrange(names.UPSTREAM_LEASES, 0, -1, withscores=True)
        assert {m for m, s in leases if s > now_ms} == {b"live", b"a000"}
        await r.aclose()

    arun(body())
