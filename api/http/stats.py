"""What the API reads back from the metric snapshots: Prometheus pages and the cluster stats.

- :meth:`StatsService.pod_metrics` (``GET /metrics``): the processes of *this* API container
  (all its uvicorn processes), each series labelled ``process``. Any of its processes answers
  with the same series, so scraping every API pod counts each request exactly once.
- :meth:`StatsService.cluster_metrics` (``GET /metrics/cluster``): what belongs to no API pod —
  every worker process (labelled ``process``), the queue depth and the live worker count. Every
  replica answers the same; scrape it through one target only.
- :meth:`StatsService.cluster_stats` (``GET /admin/stats``): the dashboard's JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.tenancy.keys import KeyStore
from api.tenancy.waiting import named, waiting_by_key
from shared import names, redis_trouble
from shared.metrics import UPSTREAM_ERROR_KINDS
from shared.telemetry import (
    FORGET_AFTER,
    Reporter,
    Snapshot,
    ms,
    quantile,
    read_snapshots,
    ttft_buckets,
    window_sum,
)


class _SnapshotCollector:
    """Yields the families of several snapshots merged, each sample labelled with its process."""

    def __init__(self, snaps: Iterable[Snapshot], extra: Iterable[Metric] = ()) -> None:
        self._snaps = list(snaps)
        self._extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for snap in sorted(self._snaps, key=lambda s: s["id"]):
            for name, type_, doc, samples in snap["families"]:
                family = merged.get(name)
                if family is None:
                    family = merged[name] = Metric(name, doc, type_)
                for sample, labels, value in samples:
                    family.add_sample(sample, {**labels, "process": snap["id"]}, value)
        yield from merged.values()
        yield from self._extra


def render(snaps: Iterable[Snapshot], extra: Iterable[Metric] = ()) -> bytes:
    """Prometheus text exposition of ``snaps`` (plus ``extra`` families)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snaps, extra))
    return generate_latest(registry)


async def live_workers(redis: Redis, *, now: float | None = None) -> dict[str, tuple[float, bool]]:
    """Workers seen lately: id -> (last snapshot time, arq health key present)."""
    now = time.time() if now is None else now
    seen = await redis.zrangebyscore(names.metrics_index("worker"), now - FORGET_AFTER, "+inf", withscores=True)
    if not seen:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for wid, _ in seen:
            pipe.exists(names.worker_health_key(wid.decode()))
        alive = await pipe.execute()
    return {wid.decode(): (float(score), bool(ok)) for (wid, score), ok in zip(seen, alive, strict=True)}


class StatsService:
    """Reads the snapshots for one API process (kept in ``app.state.stats``)."""

    def __init__(self, redis: Redis, reporter: Reporter) -> None:
        self.redis = redis
        self.reporter = reporter

    async def pod_metrics(self) -> bytes:
        try:
            own = await self.reporter.tick()  # fresh, so this process's series never lag behind
            snaps = [s for s in await read_snapshots(self.redis, "api") if s["instance"] == self.reporter.instance]
            if not any(s["id"] == own["id"] for s in snaps):
                snaps.append(own)
        except (RedisError, OSError):
            snaps = [self.reporter.snapshot(time.time())]  # Redis down: at least this process
        return render(snaps)

    async def cluster_metrics(self) -> bytes:
        try:
            return await self._cluster_metrics()
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc

    async def cluster_stats(self) -> dict[str, Any]:
        try:
            return await self._cluster_stats()
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc

    async def _cluster_metrics(self) -> bytes:
        snaps = await read_snapshots(self.redis, "worker")
        depth, workers = await asyncio.gather(self.redis.zcard(names.QUEUE), live_workers(self.redis))
        queue = GaugeMetricFamily(
            "decopy_queue_depth", "Chat jobs queued or running (the arq queue's size).", value=int(depth)
        )
        alive = GaugeMetricFamily(
            "decopy_workers_alive",
            "Worker processes whose health key is fresh.",
            value=sum(ok for _, ok in workers.values()),
        )
        return render(snaps, [queue, alive])

    async def _cluster_stats(self) -> dict[str, Any]:
        await self.reporter.tick()
        now = time.time()
        api, worker_snaps = await asyncio.gather(
            read_snapshots(self.redis, "api", now=now), read_snapshots(self.redis, "worker", now=now)
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(names.STATS_TOTALS)
            pipe.zcard(names.QUEUE)
            pipe.lrange(names.STATS_HISTORY, 0, -1)
            totals_raw, depth, history_raw = await pipe.execute()
        totals = {k.decode(): int(v) for k, v in totals_raw.items()}
        workers = await live_workers(self.redis, now=now)
        waiting = waiting_by_key(api)
        if waiting:  # the key store is read only when some key has jobs waiting or started lately
            waiting = named(waiting, {str(k.id): str(k.name) for k in await KeyStore(self.redis).list_all()})
        running = {s["id"]: int(s["gauges"].get("jobs_running", 0)) for s in worker_snaps}
        buckets = ttft_buckets(api, 300)
        return {
            "time": now,
            "requests_per_second": round(window_sum(api, 60, "requests") / 60, 3),
            "requests_total": totals.get("requests", 0),
            "ttft_p50_ms": ms(quantile(0.5, buckets)),
            "ttft_p99_ms": ms(quantile(0.99, buckets)),
            "streams_in_flight": int(sum(s["gauges"].get("streams_in_flight", 0) for s in api)),
            "queue_depth": int(depth),
            "waiting_by_key": waiting,  # jobs waiting and wait times per key
            "workers": [
                {"id": wid, "jobs_running": running.get(wid, 0) if ok else 0, "last_seen": seen, "alive": ok}
                for wid, (seen, ok) in sorted(workers.items())
            ],
            "upstream_errors": {k: totals.get("upstream_errors:" + k, 0) for k in UPSTREAM_ERROR_KINDS},
            "rate_limit_rejections": totals.get("rate_limit_rejections", 0),
            "history": [orjson.loads(p) for p in reversed(history_raw)],
        }
