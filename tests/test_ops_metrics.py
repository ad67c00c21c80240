"""/metrics, /metrics/cluster and /admin/stats on real processes.

Two API replicas (the first with API_WORKERS=2 uvicorn processes), workers and the simulator,
all sharing one Redis. Checks that each request is counted exactly once whichever process
answers the scrape, that worker figures and upstream errors reach the cluster page and the
stats, and that a rate-limit rejection counted in another process reaches the stats.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from devtools.procs import Proc
from shared import metrics
from shared.metrics import API_REGISTRY
from shared.telemetry import Reporter
from tests.conftest import Gateway, directive, start_gateway, wait_until
from tests.ops_helpers import fresh_get, label_values, total

MASTER = "sk-ops-master"
CHAT = "/v1/chat/completions"
ENV = {"METRICS_INTERVAL": "0.5", "API_MASTER_KEY": MASTER, "API_WORKERS": "2"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Gateway, Proc, str]]:
    gw = start_gateway(ENV, workers=2)
    gw.api_key = MASTER
    try:
        # a second replica: one uvicorn process, same Redis
        replica, replica_url = gw.stack.api({**gw.env, "API_WORKERS": "1"})
        yield gw, replica, replica_url
    finally:
        gw.stop()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {MASTER}"}


def _chat(base_url: str, text: str, stream: bool = False) -> httpx.Response:
    body = {"model": "decopy-deepseek-v3", "stream": stream, "messages": [{"role": "user", "content": text}]}
    with httpx.Client(base_url=base_url, timeout=60, headers=_auth()) as http:  # new connection each time
        return http.post(CHAT, json=body)


def _stats(base_url: str) -> dict[str, Any]:
    resp = fresh_get(base_url, "/admin/stats", _auth())
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_pod_metrics_count_each_request_once_whichever_uvicorn_process_answers(
    cluster: tuple[Gateway, Proc, str],
) -> None:
    gw, _, replica_url = cluster
    before = _stats(gw.base_url)["requests_total"]
    n = 12
    for i in range(n):
        assert _chat(gw.base_url, f"count me {i}", stream=bool(i % 2)).status_code == 200

    def chat_count() -> float:
        return total(fresh_get(gw.base_url, "/metrics").text, "decopy_requests_total", route=CHAT, status="200")

    wait_until(lambda: chat_count() == n, 20, "the pod's /metrics to show every request")
    pages = [fresh_get(gw.base_url, "/metrics").text for _ in range(8)]
    # every scrape, whichever of the two processes answers, shows the same exact count
    assert [total(p, "decopy_requests_total", route=CHAT, status="200") for p in pages] == [n] * 8
    # both uvicorn processes report (each has its own streams gauge)
    assert len(label_values(pages[-1], "decopy_streams_in_flight", "process")) == 2
    assert total(pages[-1], "decopy_request_duration_seconds_count", route=CHAT) == n
    assert total(pages[-1], "decopy_time_to_first_token_seconds_count", model="decopy-deepseek-v3") == n
    # worker series are not on the pod page (they are on /metrics/cluster, scraped once)
    assert "decopy_jobs_total" not in pages[-1]

    # the other replica's /metrics has only its own processes: none of these requests
    assert total(fresh_get(replica_url, "/metrics").text, "decopy_requests_total", route=CHAT) == 0
    # ... while the cluster stats, from either replica, count all of them
    wait_until(lambda: _stats(replica_url)["requests_total"] == before + n, 20, "cluster requests_total")


def test_cluster_metrics_and_stats_show_workers_jobs_and_upstream_errors(
    cluster: tuple[Gateway, Proc, str], tag: str
) -> None:
    gw, _, replica_url = cluster
    errors_before = _stats(gw.base_url)["upstream_errors"]
    page = fresh_get(replica_url, "/metrics/cluster").text
    completed_before = total(page, "decopy_jobs_total", outcome="completed")
    failed_before = total(page, "decopy_jobs_total", outcome="failed")

    # cloudflare once then success; 429 once then success; a protocol error (code) every time
    ok1 = _chat(gw.base_url, f"{tag} a\n" + directive(create_fail="cloudflare", times=1, key=tag + "cf"))
    ok2 = _chat(gw.base_url, f"{tag} b\n" + directive(create_fail="429", times=1, key=tag + "rl"))
    bad = _chat(gw.base_url, f"{tag} c\n" + directive(create_fail="500", key=tag + "http"))
    assert ok1.status_code == 200 and ok2.status_code == 200, (ok1.text, ok2.text)
    assert bad.status_code == 502, bad.text
    tries = int(gw.env.get("UPSTREAM_RETRIES", "3")) + 1

    def cluster_page() -> str:
        return fresh_get(replica_url, "/metrics/cluster").text

    wait_until(
        lambda: total(cluster_page(), "decopy_jobs_total", outcome="failed") == failed_before + 1,
        20,
        "the failed job on /metrics/cluster",
    )
    page = cluster_page()
    assert total(page, "decopy_jobs_total", outcome="completed") == completed_before + 2
    assert len(label_values(page, "decopy_jobs_running", "process")) == 2  # both workers
    assert total(page, "decopy_workers_alive") == 2
    assert total(page, "decopy_queue_depth") == 0

    def grew() -> dict[str, int]:
        now = _stats(replica_url)["upstream_errors"]
        return {k: now[k] - errors_before[k] for k in now}

    wait_until(lambda: grew()["http"] == tries, 20, "upstream errors in the stats")
    assert grew() == {"cloudflare": 1, "rate_limited": 1, "http": tries, "protocol": 0, "timeout": 0, "connection": 0}
    assert total(page, "decopy_upstream_errors_total", kind="cloudflare") >= 1


def test_rate_limit_rejections_counted_in_another_process_reach_the_stats(cluster: tuple[Gateway, Proc, str]) -> None:
    gw, _, replica_url = cluster

    async def as_an_api_process() -> tuple[int, int]:
        # this test process plays one more API process: it counts two rejections and reports
        redis = Redis.from_url(gw.redis_url)
        reporter = Reporter(redis, role="api", registry=API_REGISTRY, interval=0.5, process=f"pytest-{os.getpid()}")
        try:
            await reporter.tick()  # what this process counted before (other tests) is in the totals now
            before = _stats(replica_url)["rate_limit_rejections"]
            metrics.rate_limit_rejected("team-a")
            metrics.rate_limit_rejected("team-a")
            await reporter.tick()
            return before, _stats(replica_url)["rate_limit_rejections"]
        finally:
            await reporter.stop()
            await redis.aclose()

    before, after = asyncio.run(as_an_api_process())
    assert after == before + 2


def test_admin_stats_shape_and_a_killed_worker(cluster: tuple[Gateway, Proc, str]) -> None:
    gw, _, _ = cluster
    assert _chat(gw.base_url, "for the figures").status_code == 200
    stats = wait_until(lambda: (s := _stats(gw.base_url))["ttft_p50_ms"] is not None and s, 10, "a TTFT")
    assert set(stats) == {
        "time",
        "requests_per_second",
        "requests_total",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "streams_in_flight",
        "queue_depth",
        "workers",
        "upstream_errors",
        "rate_limit_rejections",
        "history",
        "waiting_by_key",
    }
    assert abs(stats["time"] - time.time()) < 60
    assert stats["requests_per_second"] > 0  # the earlier tests' requests, within the last 60 s
    assert isinstance(stats["ttft_p50_ms"], float) and isinstance(stats["ttft_p99_ms"], float)
    assert 0 < stats["ttft_p50_ms"] <= stats["ttft_p99_ms"]
    assert isinstance(stats["streams_in_flight"], int) and isinstance(stats["queue_depth"], int)
    assert set(stats["upstream_errors"]) == {"cloudflare", "rate_limited", "http", "protocol", "timeout", "connection"}
    alive_ids = {f"{os.uname().nodename}-{w.pid}" for w in gw.workers}
    assert {w["id"] for w in stats["workers"]} == alive_ids
    for w in stats["workers"]:
        assert set(w) == {"id", "jobs_running", "last_seen", "alive"} and w["alive"] is True

    # history: one point per 10-s slot, oldest first, with the contract's fields
    stats = wait_until(lambda: (s := _stats(gw.base_url))["history"] and s, 25, "a history point")
    point = stats["history"][-1]
    assert set(point) == {
        "t",
        "rps",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "streams_in_flight",
        "queue_depth",
        "upstream_errors",
        "rate_limit_rejections",
    }
    assert point["t"] % 10 == 0
    assert [p["t"] for p in stats["history"]] == sorted(p["t"] for p in stats["history"])

    # a worker killed outright: it stays listed for a while, not alive
    victim = gw.workers[0]
    victim.signal(signal.SIGKILL)
    victim_id = f"{os.uname().nodename}-{victim.pid}"

    def victim_state() -> bool | None:
        return {w["id"]: w["alive"] for w in _stats(gw.base_url)["workers"]}.get(victim_id)

    wait_until(lambda: victim_state() is False, 20, "the killed worker shown as not alive")


def test_streams_in_flight_counts_open_streams(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"METRICS_INTERVAL": "0.5", "API_MASTER_KEY": MASTER}, workers=1)
    gw.api_key = MASTER
    slow = f"{tag}\n" + directive(n=20, interval_ms=100)
    client = gw.client()
    streams = [
        client.chat.completions.create(
            model="decopy-deepseek-v3", stream=True, messages=[{"role": "user", "content": slow}]
        )
        for _ in range(3)
    ]
    try:
        for s in streams:  # each has started
            next(iter(s))
        wait_until(lambda: _stats(gw.base_url)["streams_in_flight"] == 3, 10, "3 streams in flight")
        assert total(fresh_get(gw.base_url, "/metrics").text, "decopy_streams_in_flight") == 3
    finally:
        for s in streams:
            s.close()
    wait_until(lambda: _stats(gw.base_url)["streams_in_flight"] == 0, 15, "no stream in flight")
