"""Metric snapshots in Redis: how every process's figures reach ``/metrics`` and ``/admin/stats``.

Each process (every uvicorn process of every API replica, every worker) runs one
:class:`Reporter`. Every ``METRICS_INTERVAL`` seconds, in one MULTI/EXEC, it:

- writes a snapshot of its own registry under ``names.metrics_snapshot_key(id)`` with a TTL
  (the samples, for ``/metrics``; a few derived running sums and gauges; and the increase of
  those sums over the last 10 s, 60 s and 300 s, from a ring of its own past sums), and
  records itself in ``names.metrics_index(role)``;
- adds what its counters gained since its last write to the cluster-wide running totals
  ``names.STATS_TOTALS`` (so totals survive a process's exit; MULTI/EXEC so a retried write
  never counts twice).

Then, once per 10-s slot, the one process whose ``SET NX`` on the slot's key wins computes a
cluster history point from all the snapshots and pushes it on ``names.STATS_HISTORY`` (capped
at 15 minutes). Readers (the API's stats and metrics endpoints) use :func:`read_snapshots`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import names
from shared.metrics import TTFT_BUCKETS, UPSTREAM_ERROR_KINDS

log = logging.getLogger("telemetry")

HISTORY_STEP = 10  # seconds per history point (the /admin/stats contract)
HISTORY_POINTS = 90  # 15 minutes
WINDOWS = (10, 60, 300)
TTFT_BOUNDS: tuple[float, ...] = (*TTFT_BUCKETS, math.inf)
#: A process that has not reported for this long is left out of the worker list.
FORGET_AFTER = 60.0
#: Routes whose requests count in ``requests_total``: the clients' API and the dashboard's "Try it".
CLIENT_ROUTES = ("/v1/", "/dashboard/api/")

Snapshot = dict[str, Any]


def process_id() -> str:
    """This process's id: ``<hostname>-<pid>`` (a worker's is also its arq health-key suffix)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def snapshot_ttl(interval: float) -> int:
    """Seconds a snapshot outlives its writer: a few missed writes are tolerated, a dead process fades."""
    return max(10, math.ceil(5 * interval))


def families(registry: CollectorRegistry) -> list[list[Any]]:
    """The registry's samples as plain lists ``[name, type, help, [[sample, labels, value], ...]]``."""
    out: list[list[Any]] = []
    for metric in registry.collect():
        samples = [[s.name, s.labels, s.value] for s in metric.samples if not s.name.endswith("_created")]
        out.append([metric.name, metric.type, metric.documentation, samples])
    return out


def running_sums(fams: list[list[Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """(counters, gauges) that the cluster stats need, derived from one process's samples.

    Counter keys: ``requests`` (``/v1/*`` requests and the dashboard's "Try it" chats, which are
    the same requests from a logged-in page), ``rate_limit_rejections``,
    ``upstream_errors:<kind>``, ``jobs:<outcome>``, ``ttft:<i>`` (cumulative count of TTFT
    bucket ``i`` of :data:`TTFT_BOUNDS`, summed over models).
    """
    sums: dict[str, float] = {}
    gauges: dict[str, float] = {}
    for _name, _type, _doc, samples in fams:
        for sample, labels, value in samples:
            key: str | None = None
            if sample == "decopy_requests_total":
                if str(labels.get("route", "")).startswith(CLIENT_ROUTES):
                    key = "requests"
            elif sample == "decopy_rate_limit_rejections_total":
                key = "rate_limit_rejections"
            elif sample == "decopy_upstream_errors_total":
                key = "upstream_errors:" + labels.get("kind", "")
            elif sample == "decopy_jobs_total":
                key = "jobs:" + labels.get("outcome", "")
            elif sample == "decopy_time_to_first_token_seconds_bucket":
                bound = float(labels["le"])
                key = f"ttft:{TTFT_BOUNDS.index(bound)}" if bound in TTFT_BOUNDS else None
            elif sample == "decopy_key_queue_wait_seconds_sum":  # in ms: totals are integers
                key, value = "key_wait_ms:" + labels.get("key_id", ""), value * 1000
            elif sample == "decopy_key_queue_wait_seconds_count":
                key = "key_waits:" + labels.get("key_id", "")
            elif sample in ("decopy_streams_in_flight", "decopy_jobs_running"):
                gauges[sample.removeprefix("decopy_")] = gauges.get(sample.removeprefix("decopy_"), 0) + value
            if key is not None:
                sums[key] = sums.get(key, 0) + value
    return sums, gauges


def _minus(now: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {k: v - base.get(k, 0) for k, v in now.items() if v - base.get(k, 0)}


class Reporter:
    """Publishes one process's metrics to Redis every ``interval`` seconds (see the module docstring).

    ``role`` is ``"api"`` or ``"worker"``; ``instance`` groups the processes of one container
    (the uvicorn processes of one API replica); ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        role: str,
        registry: CollectorRegistry,
        interval: float,
        process: str | None = None,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.role = role
        self.registry = registry
        self.interval = interval
        self.process = process or process_id()
        self.instance = instance or self.process
        self.clock = clock
        self.started = clock()
        self._ring: deque[tuple[float, dict[str, float]]] = deque()
        self._flushed: dict[str, float] = {}
        self._last_slot = -1
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        # tick() also runs on demand (a /metrics scrape): one at a time, or totals count twice.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"metrics-reporter-{self.role}")

    async def stop(self) -> None:
        """Stop reporting; a clean exit also withdraws the snapshot (the totals keep its counts)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            # bounded: a Redis that does not answer must not hold up the shutdown
            async with asyncio.timeout(3):
                await self.tick()  # the last increments reach the totals
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(names.metrics_snapshot_key(self.process))
                    pipe.zrem(names.metrics_index(self.role), self.process)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not withdraw the metrics snapshot: %s", exc or type(exc).__name__)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                if self._failing:
                    log.info("metrics snapshots reach Redis again")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not self._failing:
                    log.warning("metrics snapshot not written (%s); retrying every %.1fs", exc, self.interval)
                self._failing = True
            except Exception:
                log.exception("metrics snapshot failed")
            await asyncio.sleep(self.interval)

    def snapshot(self, now: float) -> Snapshot:
        """This process's snapshot at ``now`` (and a new entry in its ring of past sums)."""
        fams = families(self.registry)
        sums, gauges = running_sums(fams)
        if not self._ring:
            self._ring.append((self.started, {}))  # everything counted so far happened since start
        self._ring.append((now, sums))
        while len(self._ring) > 2 and self._ring[1][0] <= now - WINDOWS[-1]:
            self._ring.popleft()
        windows = {}
        times = [t for t, _ in self._ring]
        for width in WINDOWS:
            # the newest entry at or before now - width (or the oldest kept: the process is younger)
            i = max(0, bisect.bisect_right(times, now - width) - 1)
            windows[str(width)] = _minus(sums, self._ring[i][1])
        return {
            "id": self.process,
            "role": self.role,
            "instance": self.instance,
            "t": now,
            "ttl": snapshot_ttl(self.interval),
            "started": self.started,
            "families": fams,
            "sums": sums,
            "gauges": gauges,
            "windows": windows,
        }

    async def tick(self, now: float | None = None) -> Snapshot:
        """Write this process's snapshot and totals; write the history point if this slot is ours."""
        async with self._lock:
            return await self._tick(self.clock() if now is None else now)

    async def _tick(self, now: float) -> Snapshot:
        snap = self.snapshot(now)
        increments = {
            k: int(v - self._flushed.get(k, 0))
            for k, v in snap["sums"].items()
            if not k.startswith("ttft:") and int(v - self._flushed.get(k, 0))
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(names.metrics_snapshot_key(self.process), orjson.dumps(snap), ex=snapshot_ttl(self.interval))
            pipe.zadd(names.metrics_index(self.role), {self.process: now})
            pipe.zremrangebyscore(names.metrics_index(self.role), "-inf", now - 10 * FORGET_AFTER)
            for key, inc in increments.items():
                pipe.hincrby(names.STATS_TOTALS, key, inc)
            await pipe.execute()
        for key, inc in increments.items():
            self._flushed[key] = self._flushed.get(key, 0) + inc
        slot = int(now // HISTORY_STEP)
        if slot != self._last_slot:
            self._last_slot = slot
            if await self.redis.set(names.stats_slot_key(slot), self.process, nx=True, ex=HISTORY_STEP * 12):
                point = await history_point(self.redis, slot * HISTORY_STEP, now=now)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lpush(names.STATS_HISTORY, orjson.dumps(point))
                    pipe.ltrim(names.STATS_HISTORY, 0, HISTORY_POINTS - 1)
                    await pipe.execute()
        return snap


# --- reading -------------------------------------------------------------------------------


async def read_snapshots(redis: Redis, role: str, *, now: float | None = None) -> list[Snapshot]:
    """The live snapshots of every process of ``role`` (expired ones are gone by their TTL)."""
    now = time.time() if now is None else now
    ids = await redis.zrangebyscore(names.metrics_index(role), now - FORGET_AFTER, "+inf")
    if not ids:
        return []
    raw = await redis.mget([names.metrics_snapshot_key(i.decode()) for i in ids])
    snaps = [orjson.loads(r) for r in raw if r is not None]
    return [s for s in snaps if s["t"] + s["ttl"] >= now]


def window_sum(snaps: list[Snapshot], width: int, key: str) -> float:
    """What counter ``key`` gained over the last ``width`` seconds, summed over processes."""
    return float(sum(s["windows"].get(str(width), {}).get(key, 0) for s in snaps))


def ttft_buckets(snaps: list[Snapshot], width: int | None) -> list[float]:
    """Cumulative TTFT bucket counts merged over processes (over a window, or since start)."""
    merged = [0.0] * len(TTFT_BOUNDS)
    for s in snaps:
        source = s["sums"] if width is None else s["windows"].get(str(width), {})
        for i in range(len(TTFT_BOUNDS)):
            merged[i] += source.get(f"ttft:{i}", 0)
    return merged


def quantile(q: float, cumulative: list[float], bounds: tuple[float, ...] = TTFT_BOUNDS) -> float | None:
    """Estimate quantile ``q`` from cumulative bucket counts, as Prometheus' histogram_quantile does.

    Linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket gives the
    highest finite bound. None without observations.
    """
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def history_point(redis: Redis, t: float, *, now: float | None = None) -> dict[str, Any]:
    """One point of the 15-minute history: the last 10 s across every process."""
    api = await read_snapshots(redis, "api", now=now)
    workers = await read_snapshots(redis, "worker", now=now)
    buckets = ttft_buckets(api, HISTORY_STEP)
    return {
        "t": float(t),
        "rps": round(window_sum(api, HISTORY_STEP, "requests") / HISTORY_STEP, 3),
        "ttft_p50_ms": ms(quantile(0.5, buckets)),
        "ttft_p99_ms": ms(quantile(0.99, buckets)),
        "streams_in_flight": int(sum(s["gauges"].get("streams_in_flight", 0) for s in api)),
        "queue_depth": int(await redis.zcard(names.QUEUE)),
        "upstream_errors": int(
            sum(window_sum(workers, HISTORY_STEP, "upstream_errors:" + k) for k in UPSTREAM_ERROR_KINDS)
        ),
        "rate_limit_rejections": int(window_sum(api, HISTORY_STEP, "rate_limit_rejections")),
    }
