"""Metric snapshots in Redis: windows, cluster totals, the 10-s history and quantiles.

In-process against a real private Redis, with an injected clock so time windows are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis

from devtools.procs import Stack
from shared import metrics, names
from shared.metrics import TTFT_BUCKETS
from shared.telemetry import HISTORY_POINTS, TTFT_BOUNDS, Reporter, quantile, read_snapshots, ttft_buckets


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    stack = Stack()
    try:
        _, url = stack.redis()
        yield url
    finally:
        stack.stop()


class FakeApi:
    """A registry shaped like an API process's (same metric names), private to one test."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("decopy_requests", "r", ["route", "status", "model"], registry=self.registry)
        self.ttft = Histogram(
            "decopy_time_to_first_token_seconds", "t", ["model"], buckets=TTFT_BUCKETS, registry=self.registry
        )
        self.streams = Gauge("decopy_streams_in_flight", "s", registry=self.registry)
        self.rejections = Counter("decopy_rate_limit_rejections", "x", ["key"], registry=self.registry)

    def chat(self, n: int = 1, ttft: float = 0.3) -> None:
        for _ in range(n):
            self.requests.labels(route="/v1/chat/completions", status="200", model="m").inc()
            self.ttft.labels(model="m").observe(ttft)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def _fresh(url: str) -> Any:  # redis-py types most replies as "awaitable or not"
    redis = Redis.from_url(url)
    await redis.flushdb()
    return redis


def test_quantile_interpolates_like_histogram_quantile() -> None:
    bounds = (1.0, 2.0, 4.0, float("inf"))
    assert quantile(0.5, [0, 0, 0, 0], bounds) is None
    # 10 in (1,2], 10 in (2,4]: the median is the top of the first, p75 halfway in the second
    assert quantile(0.5, [0, 10, 20, 20], bounds) == pytest.approx(2.0)
    assert quantile(0.75, [0, 10, 20, 20], bounds) == pytest.approx(3.0)
    assert quantile(0.25, [0, 10, 20, 20], bounds) == pytest.approx(1.5)
    # a rank in +Inf gives the highest finite bound
    assert quantile(0.99, [0, 0, 1, 100], bounds) == pytest.approx(4.0)


def test_windows_totals_and_history(redis_url: str) -> None:
    async def scenario() -> None:
        redis = await _fresh(redis_url)
        try:
            clock = Clock(10_000.0)  # slot 1000 starts here
            a, b = FakeApi(), FakeApi()
            ra = Reporter(redis, role="api", registry=a.registry, interval=2, process="a", clock=clock)
            rb = Reporter(redis, role="api", registry=b.registry, interval=2, process="b", clock=clock)

            a.chat(5, ttft=0.3)
            b.chat(3, ttft=3.5)
            b.rejections.labels(key="team-x").inc(2)
            await ra.tick()
            await rb.tick()
            # both ticked in slot 1000: exactly one history point, written by the first
            assert await redis.llen(names.STATS_HISTORY) == 1
            assert await redis.get(names.stats_slot_key(1000)) == b"a"

            totals = {k.decode(): int(v) for k, v in (await redis.hgetall(names.STATS_TOTALS)).items()}
            assert totals == {"requests": 8, "rate_limit_rejections": 2}

            # 30 s later: 4 more on a; the 10-s window has only those, the 60-s window all 12
            clock.t += 30
            a.chat(4, ttft=0.3)
            await ra.tick()
            await rb.tick()
            snaps = {s["id"]: s for s in await read_snapshots(redis, "api", now=clock.t)}
            assert snaps["a"]["windows"]["10"]["requests"] == 4
            assert snaps["a"]["windows"]["60"]["requests"] == 9
            assert "requests" not in snaps["b"]["windows"]["10"]
            assert snaps["b"]["windows"]["60"]["requests"] == 3
            # ticking again adds nothing to the totals (increments, not values, are added)
            await ra.tick()
            assert int(await redis.hget(names.STATS_TOTALS, "requests")) == 12

            # merged TTFT buckets over 300 s: 9 fast (0.3 s) and 3 slow (3.5 s)
            merged = ttft_buckets(list(snaps.values()), 300)
            assert merged[-1] == 12
            assert merged[TTFT_BOUNDS.index(0.5)] == 9
            p50, p99 = quantile(0.5, merged), quantile(0.99, merged)
            assert p50 is not None and 0.25 < p50 <= 0.5
            assert p99 is not None and 3.0 < p99 <= 5.0

            # the point of slot 1003 counts the last 10 s: 4 requests = 0.4 rps
            points = [orjson.loads(p) for p in await redis.lrange(names.STATS_HISTORY, 0, -1)]
            assert [p["t"] for p in points] == [10_030.0, 10_000.0]
            assert points[0]["rps"] == pytest.approx(0.4)
            # slot 1000's point was taken by a's tick, before b had written anything
            assert points[1]["rps"] == pytest.approx(0.5)
            assert points[1]["rate_limit_rejections"] == 0

            # history is capped at 15 minutes of 10-s points
            for _ in range(HISTORY_POINTS + 5):
                clock.t += 10
                await ra.tick()
            assert await redis.llen(names.STATS_HISTORY) == HISTORY_POINTS

            # a clean stop withdraws the snapshot but the totals keep its counts
            a.chat(1)
            await rb.tick()
            await ra.stop()
            assert [s["id"] for s in await read_snapshots(redis, "api", now=clock.t)] == ["b"]
            assert int(await redis.hget(names.STATS_TOTALS, "requests")) == 13
        finally:
            await redis.aclose()

    run(scenario())


def test_rate_limit_rejected_is_counted_in_the_api_registry() -> None:
    before = metrics.RATE_LIMIT_REJECTIONS.labels(key="team-q")._value.get()
    metrics.rate_limit_rejected("team-q")
    assert metrics.RATE_LIMIT_REJECTIONS.labels(key="team-q")._value.get() == before + 1


def test_job_outcome_hook_counts_outcomes_and_upstream_errors() -> None:
    errs = metrics.UPSTREAM_ERRORS.labels(kind="protocol")._value.get()
    failed = metrics.JOBS.labels(outcome="failed")._value.get()
    metrics.job_outcome("upstream_error", "protocol")
    metrics.job_outcome("failed", "protocol")
    assert metrics.UPSTREAM_ERRORS.labels(kind="protocol")._value.get() == errs + 1
    assert metrics.JOBS.labels(outcome="failed")._value.get() == failed + 1
