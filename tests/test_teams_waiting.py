"""Waiting made visible: x-queue-wait-ms on every answer, per-key waiting in /admin/stats and the metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import Gateway, directive, wait_until

MASTER = "sk-master-waiting-test"
MODEL = "decopy-deepseek-v3"


def test_waiting_jobs_and_wait_times_per_key(make_gateway: Any, tag: str) -> None:
    # One worker running one job at a time: while a slow answer runs, the next jobs wait for it.
    gw: Gateway = make_gateway(
        {"API_MASTER_KEY": MASTER, "WORKER_CONCURRENCY": "1", "METRICS_INTERVAL": "0.5"}, workers=1
    )
    admin = httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)
    key = admin.post("/admin/keys", json={"name": "waiting-team"}).json()
    slow = directive(reply=["slow "] * 8, interval_ms=250)  # at least 1.75 s of answer

    def ask(i: int, content: str, stream: bool = False) -> httpx.Response:
        with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=60) as c:
            body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": content}]}
            return c.post("/v1/chat/completions", json=body)

    def waiting_row() -> dict[str, Any] | None:
        stats = admin.get("/admin/stats").json()
        rows = [r for r in stats["waiting_by_key"] if r["key_id"] == key["id"]]
        return rows[0] if rows and rows[0]["waiting"] >= 2 else None

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(ask, 0, f"{tag} first\n{slow}")
        wait_until(lambda: gw.sim_entries(tag), 10, "the slow job to reach the upstream")
        queued = [pool.submit(ask, i, f"{tag} queued {i}", i == 1) for i in (1, 2)]
        row = wait_until(waiting_row, 10, "two waiting jobs of the key in /admin/stats")
        assert row["key"] == "waiting-team" and row["oldest_wait_ms"] > 0
        metrics = admin.get("/metrics").text
        assert f'decopy_key_jobs_waiting{{key_id="{key["id"]}"' in metrics
        assert "waiting-team" not in metrics  # /metrics needs no key: labelled by id, never by a team's name
        answers = [first.result(), *(f.result() for f in queued)]
    for resp in answers:
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-queue-wait-ms"].isdigit()
    # The queued jobs could only start once the slow one (8 pieces 250 ms apart) had ended.
    assert all(int(r.headers["x-queue-wait-ms"]) >= 1000 for r in answers[1:])

    def settled() -> dict[str, Any] | None:
        rows = [r for r in admin.get("/admin/stats").json()["waiting_by_key"] if r["key_id"] == key["id"]]
        return rows[0] if rows and rows[0]["started"] == 3 and rows[0]["waiting"] == 0 else None

    row = wait_until(settled, 10, "the three jobs counted as started")
    assert row["mean_wait_ms"] >= 2000 / 3  # two of the three waited a second or more
    assert "decopy_key_queue_wait_seconds_count" in admin.get("/metrics").text
    admin.close()
