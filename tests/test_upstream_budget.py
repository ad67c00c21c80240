"""The global upstream budget (UPSTREAM_RPM, UPSTREAM_MAX_CONCURRENT), shared by every worker."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import redis

from tests.conftest import Cluster, directive, wait_until

MODEL = "decopy-deepseek-v3"
# One job per worker at a time, so the three jobs below land on three different workers: the
# budget they respect is the pool's, not each worker's.
ONE_JOB_EACH = {"WORKER_CONCURRENCY": "1", "LIMIT_LEASE_TTL": "3"}


def _calls(cluster: Cluster, needle: str) -> list[dict[str, Any]]:
    """Upstream calls (create-job + its get-job stream) whose prompt contains ``needle``: start, end, job."""
    log = cluster.sim_log()
    creates = [e for e in log if needle in (e.get("entertext") or "") and e["kind"] == "create"]
    ends = {e["job_id"]: e["ended"] for e in log if e["kind"] == "stream"}
    return [{"start": c["started"], "end": ends.get(c["job_id"]), "text": c["entertext"]} for c in creates]


def _stream(client: openai.OpenAI, content: str) -> str:
    stream = client.chat.completions.create(model=MODEL, stream=True, messages=[{"role": "user", "content": content}])
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_upstream_concurrency_is_shared_by_the_pool(make_cluster: Callable[..., Cluster], tag: str) -> None:
    cluster = make_cluster({**ONE_JOB_EACH, "UPSTREAM_MAX_CONCURRENT": "1"}, apis=1, workers=3)
    client = cluster.client(0, "anything")
    pieces = [f"<{k}>" for k in range(5)]
    with ThreadPoolExecutor(3) as pool:
        texts = list(
            pool.map(lambda i: _stream(client, f"{tag}-{i} " + directive(reply=pieces, interval_ms=150)), range(3))
        )
    assert texts == ["".join(pieces)] * 3  # all answered: over the budget means waiting, not failing
    calls = sorted(_calls(cluster, tag), key=lambda c: c["start"])
    assert len(calls) == 3
    for before, after in zip(calls, calls[1:], strict=False):
        # One upstream call at a time across the three workers: an order, not a duration. Both
        # stamps are the simulator's own clock, and it stamps a stream's end before it sends the
        # end marker, which the worker must read before it gives the budget back.
        assert after["start"] >= before["end"], calls
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        assert r.zcard("decopy:upstream:leases") == 0  # every lease given back
    finally:
        r.close()


def test_upstream_rpm_waits_then_gives_up_with_503(make_cluster: Callable[..., Cluster], tag: str) -> None:
    # IDLE_TIMEOUT (2 s) is shorter than the wait (QUEUE_TIMEOUT, 4 s): only the worker's keep-alives
    # keep the waiting request from failing as idle.
    cluster = make_cluster(
        {**ONE_JOB_EACH, "UPSTREAM_RPM": "2", "QUEUE_TIMEOUT": "4", "IDLE_TIMEOUT": "2", "WORKER_HEARTBEAT": "0.5"},
        apis=2,
        workers=3,
    )
    client = cluster.client(0, "anything")
    assert _stream(client, f"{tag}-0 " + directive(reply=["a"])) == "a"
    assert _stream(cluster.client(1, "anything"), f"{tag}-1 " + directive(reply=["b"])) == "b"
    started = time.monotonic()
    with cluster.http(1) as http:
        resp = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"{tag}-2 over budget"}]},
        )
    waited = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    err = resp.json()["error"]
    assert err["code"] == "upstream_busy" and "UPSTREAM_RPM" in err["message"]
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert waited >= 3.5  # it waited for the budget (QUEUE_TIMEOUT) rather than fail at once
    assert len(_calls(cluster, tag)) == 2  # the third never reached the upstream


def test_killed_worker_frees_its_upstream_slot_within_the_lease(make_cluster: Callable[..., Cluster], tag: str) -> None:
    cluster = make_cluster(
        {**ONE_JOB_EACH, "UPSTREAM_MAX_CONCURRENT": "1", "IDLE_TIMEOUT": "3", "WORKER_HEARTBEAT": "1"},
        apis=1,
        workers=1,
    )
    first_text = threading.Event()

    def long_stream() -> None:
        stream = cluster.client(0, "anything").chat.completions.create(
            model=MODEL,
            stream=True,
            messages=[{"role": "user", "content": f"{tag}-long " + directive(n=80, interval_ms=250)}],
        )
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first_text.set()
        except (openai.APIError, httpx.HTTPError):
            pass  # its worker is killed under it

    thread = threading.Thread(target=long_stream, daemon=True)
    thread.start()
    assert first_text.wait(30)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        assert r.zcard("decopy:upstream:leases") == 1
        cluster.workers[0].signal(signal.SIGKILL)
        killed = time.time()
        cluster.workers[0].popen.wait(10)
        assert r.zcard("decopy:upstream:leases") == 1  # the dead worker's lease outlives it...
        cluster.workers.append(cluster.stack.worker(cluster.env))
        wait_until(lambda: len(list(r.scan_iter("decopy:worker:*"))) >= 1, 30, "replacement worker")
        assert _stream(cluster.client(0, "anything"), f"{tag}-next " + directive(reply=["ok"])) == "ok"
    finally:
        r.close()
    (call,) = _calls(cluster, f"{tag}-next")
    # Renewed every second, the lease had 2 to 3 s left at the kill: the next call waited for it to
    # expire, and no longer than the lease TTL (3 s) plus room for a loaded machine.
    assert 1.5 <= call["start"] - killed <= 3 + 3
    thread.join(30)
