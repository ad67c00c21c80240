"""Waiting made visible per key: jobs waiting for a worker now, and how long jobs waited lately.

Each API process knows the jobs it queued that no worker has taken yet (its chat calls in flight
whose ``start`` has not arrived). :class:`WaitingCollector` exports them at every metric snapshot
as ``decopy_key_jobs_waiting`` and ``decopy_key_oldest_wait_seconds`` (label ``key_id`` only:
``/metrics`` needs no key, so a team's name is never a label; ``/admin/stats`` adds the names);
how long each job waited is the histogram ``decopy_key_queue_wait_seconds`` (``shared.metrics``).
:func:`waiting_by_key` merges every API process's snapshot into the ``waiting_by_key`` list of
``/admin/stats`` (the dashboard's "Waiting by key" table).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from api.relay.feed import JobFeed
from shared.telemetry import Snapshot, window_sum

#: The window (seconds) over which ``/admin/stats`` reports the mean wait and the jobs started.
WINDOW = 300


class WaitingCollector:
    """A prometheus collector over one API process's chat calls in flight (read at collect time)."""

    def __init__(self, feeds: Collection[JobFeed]) -> None:
        self._feeds = feeds

    def describe(self) -> list[Metric]:
        return []  # collected on demand: no fixed set of samples to check for duplicates

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        count: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for feed in list(self._feeds):
            if feed.started is not None:
                continue
            key_id = feed.caller[0]
            count[key_id] = count.get(key_id, 0) + 1
            oldest[key_id] = max(oldest.get(key_id, 0.0), now - feed.created)
        waiting = GaugeMetricFamily(
            "decopy_key_jobs_waiting", "Chat jobs waiting for a worker now, by key id.", labels=["key_id"]
        )
        longest = GaugeMetricFamily(
            "decopy_key_oldest_wait_seconds",
            "How long the oldest chat job still waiting for a worker has waited, by key id.",
            labels=["key_id"],
        )
        for key_id, n in sorted(count.items()):
            waiting.add_metric([key_id], n)
            longest.add_metric([key_id], oldest[key_id])
        yield waiting
        yield longest


def waiting_by_key(api_snaps: list[Snapshot]) -> list[dict[str, Any]]:
    """Per key: jobs waiting now, the oldest wait now, and the mean wait and jobs started over
    :data:`WINDOW`. Rows are named by key id; :func:`named` gives them the keys' names."""
    rows: dict[str, dict[str, Any]] = {}

    def row(key_id: str) -> dict[str, Any]:
        return rows.setdefault(
            key_id,
            {"key_id": key_id, "key": key_id, "waiting": 0, "oldest_wait_ms": None, "mean_wait_ms": None, "started": 0},
        )

    for snap in api_snaps:
        for name, _type, _doc, samples in snap["families"]:
            for sample, labels, value in samples:
                if name == "decopy_key_jobs_waiting":
                    row(labels["key_id"])["waiting"] += int(value)
                elif name == "decopy_key_oldest_wait_seconds":
                    r = row(labels["key_id"])
                    r["oldest_wait_ms"] = max(r["oldest_wait_ms"] or 0.0, round(value * 1000, 1))
                elif sample == "decopy_key_queue_wait_seconds_count":
                    row(labels["key_id"])
    for key_id, r in rows.items():
        started = window_sum(api_snaps, WINDOW, "key_waits:" + key_id)
        r["started"] = int(started)
        if started:
            r["mean_wait_ms"] = round(window_sum(api_snaps, WINDOW, "key_wait_ms:" + key_id) / started, 1)
    return [r for r in rows.values() if r["waiting"] or r["started"]]


def named(rows: list[dict[str, Any]], key_names: dict[str, str]) -> list[dict[str, Any]]:
    """The rows with their keys' names (team keys; the master key, the dashboard and open mode
    keep their id as name), most waiting first, then by name."""
    for r in rows:
        r["key"] = key_names.get(r["key_id"], r["key_id"])
    return sorted(rows, key=lambda r: (-r["waiting"], r["key"]))
