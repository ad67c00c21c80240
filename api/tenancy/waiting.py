"""Waiting made visible per key: jobs waiting for a worker now, and how long jobs waited lately.

Each API process knows the jobs it queued that no worker has taken yet (its chat calls in flight
whose ``start`` has not arrived). :class:`WaitingCollector` exports them at every metric snapshot
as ``decopy_key_jobs_waiting`` and ``decopy_key_oldest_wait_seconds`` (labels ``key_id``, ``key``);
how long each job waited is the histogram ``decopy_key_queue_wait_seconds`` (``shared.metrics``).
:func:`waiting_by_key` merges every API process's snapshot into the ``waiting_by_key`` list of
``/admin/stats`` (the dashboard's "Waiting by key" table).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from api.relay.jobstream import JobStream
from shared.telemetry import Snapshot, window_sum

#: The window (seconds) over which ``/admin/stats`` reports the mean wait and the jobs started.
WINDOW = 300


class WaitingCollector:
    """A prometheus collector over one API process's chat calls in flight (read at collect time)."""

    def __init__(self, streams: Collection[JobStream]) -> None:
        self._streams = streams

    def describe(self) -> list[Metric]:
        return []  # collected on demand: no fixed set of samples to check for duplicates

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        count: dict[tuple[str, str], int] = {}
        oldest: dict[tuple[str, str], float] = {}
        for stream in list(self._streams):
            if stream.started is not None:
                continue
            caller = stream.caller
            count[caller] = count.get(caller, 0) + 1
            oldest[caller] = max(oldest.get(caller, 0.0), now - stream.created)
        waiting = GaugeMetricFamily(
            "decopy_key_jobs_waiting", "Chat jobs waiting for a worker now, by key.", labels=["key_id", "key"]
        )
        longest = GaugeMetricFamily(
            "decopy_key_oldest_wait_seconds",
            "How long the oldest chat job still waiting for a worker has waited, by key.",
            labels=["key_id", "key"],
        )
        for (key_id, name), n in sorted(count.items()):
            waiting.add_metric([key_id, name], n)
            longest.add_metric([key_id, name], oldest[(key_id, name)])
        yield waiting
        yield longest


def waiting_by_key(api_snaps: list[Snapshot]) -> list[dict[str, Any]]:
    """Per key: jobs waiting now, the oldest wait now, and the mean wait and jobs started over :data:`WINDOW`."""
    rows: dict[str, dict[str, Any]] = {}

    def row(key_id: str, name: str) -> dict[str, Any]:
        return rows.setdefault(
            key_id,
            {"key_id": key_id, "key": name, "waiting": 0, "oldest_wait_ms": None, "mean_wait_ms": None, "started": 0},
        )

    for snap in api_snaps:
        for name, _type, _doc, samples in snap["families"]:
            for sample, labels, value in samples:
                if name == "decopy_key_jobs_waiting":
                    row(labels["key_id"], labels["key"])["waiting"] += int(value)
                elif name == "decopy_key_oldest_wait_seconds":
                    r = row(labels["key_id"], labels["key"])
                    r["oldest_wait_ms"] = max(r["oldest_wait_ms"] or 0.0, round(value * 1000, 1))
                elif sample == "decopy_key_queue_wait_seconds_count":
                    row(labels["key_id"], labels["key"])
    for key_id, r in rows.items():
        started = window_sum(api_snaps, WINDOW, "key_waits:" + key_id)
        r["started"] = int(started)
        if started:
            r["mean_wait_ms"] = round(window_sum(api_snaps, WINDOW, "key_wait_ms:" + key_id) / started, 1)
    shown = [r for r in rows.values() if r["waiting"] or r["started"]]
    return sorted(shown, key=lambda r: (-r["waiting"], r["key"]))
