"""Fair queuing across keys: weights through the admin API, and the order jobs start in when they wait."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from shared import names
from tests.conftest import Cluster, assert_openai_error, directive, start_cluster, wait_until

MASTER = "sk-master-fair-test"
MODEL = "decopy-deepseek-v3"


@pytest.fixture(scope="module")
def admin_cluster() -> Iterator[Cluster]:
    c = start_cluster({"API_MASTER_KEY": MASTER}, apis=1, workers=1)
    yield c
    c.stop()


def _weights(admin: httpx.Client) -> dict[str, Any]:
    resp = admin.get("/admin/weights")
    assert resp.status_code == 200, resp.text
    return {w["key_id"]: w for w in resp.json()["data"]}


def test_weights_through_the_admin_api(admin_cluster: Cluster) -> None:
    with admin_cluster.admin() as admin:
        key = admin.post("/admin/keys", json={"name": "heavy"}).json()
        listed = _weights(admin)
        assert listed["master"]["weight"] == 1 and listed["dashboard"]["weight"] == 1
        assert listed[key["id"]] == {"key_id": key["id"], "name": "heavy", "weight": 1}
        assert admin.put(f"/admin/weights/{key['id']}", json={"weight": 3}).json() == {"key_id": key["id"], "weight": 3}
        assert admin.put("/admin/weights/dashboard", json={"weight": 0.5}).status_code == 200
        listed = _weights(admin)
        assert listed[key["id"]]["weight"] == 3 and listed["dashboard"]["weight"] == 0.5
        for bad in ({"weight": 0}, {"weight": -1}, {"weight": 1001}, {"weight": "3"}, {"weight": True}, {}, [3]):
            assert_openai_error(admin.put(f"/admin/weights/{key['id']}", json=bad), 400, "invalid_value")
        assert_openai_error(admin.put("/admin/weights/key_nope", json={"weight": 2}), 404, "key_not_found")
        assert admin.delete("/admin/weights/dashboard").json()["weight"] == 1
        assert _weights(admin)["dashboard"]["weight"] == 1
        # A revoked key's weight goes with it.
        assert admin.delete(f"/admin/keys/{key['id']}").status_code == 200
        assert key["id"] not in _weights(admin)
        other = admin.post("/admin/keys", json={"name": "light"}).json()
    with admin_cluster.http(0, other["key"]) as team:  # a team key cannot change the shares
        assert_openai_error(team.get("/admin/weights"), 401)
        assert_openai_error(team.put(f"/admin/weights/{other['id']}", json={"weight": 100}), 401)


# --- the order jobs start in, through the API, the workers and the upstream simulator ----------

#: A short answer (three pieces 20 ms apart), so a saturated window is seconds, not minutes.
SHORT = directive(reply=["a ", "b ", "c"], interval_ms=20)


@pytest.fixture(scope="module")
def saturated() -> Iterator[Cluster]:
    """Two upstream streams for the whole pool, two workers with room for many more jobs."""
    env = {"API_MASTER_KEY": MASTER, "UPSTREAM_MAX_CONCURRENT": "2", "QUEUE_TIMEOUT": "120", "WORKER_POLL_DELAY": "0.5"}
    c = start_cluster(env, apis=1, workers=2)
    yield c
    c.stop()


def _creates(cluster: Cluster, tag: str) -> list[str]:
    """The prompts of this test's upstream calls, in the order they reached the upstream."""
    return [e["entertext"] for e in cluster.sim_log() if e["kind"] == "create" and tag in (e.get("entertext") or "")]


def _line(cluster: Cluster, key_id: str) -> int:
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        return int(r.llen(names.fq_line(key_id)))  # type: ignore[arg-type]  # redis-py's sync/async union
    finally:
        r.close()


async def _ask_all(cluster: Cluster, secret: str, prompts: list[str]) -> list[int]:
    limits = httpx.Limits(max_connections=len(prompts) + 5)
    async with httpx.AsyncClient(base_url=cluster.bases[0], timeout=120, limits=limits) as client:

        async def one(prompt: str) -> int:
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
            resp = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"})
            return resp.status_code

        return list(await asyncio.gather(*(one(p) for p in prompts)))


def _in_thread(coro: Any) -> concurrent.futures.Future[Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(asyncio.run, coro)
    pool.shutdown(wait=False)
    return future


def test_a_small_batch_is_not_stuck_behind_a_large_one(saturated: Cluster, tag: str) -> None:
    with saturated.admin() as admin:
        a = admin.post("/admin/keys", json={"name": "batch"}).json()
        b = admin.post("/admin/keys", json={"name": "interactive"}).json()
    a_prompts = [f"{tag} A{i:03d}\n{SHORT}" for i in range(100)]
    b_prompts = [f"{tag} B{i}\n{SHORT}" for i in range(5)]
    a_done = _in_thread(_ask_all(saturated, a["key"], a_prompts))
    wait_until(lambda: _line(saturated, a["id"]) >= 90, 30, "A's jobs waiting in its line")
    started_before = len(_creates(saturated, tag))
    b_statuses = asyncio.run(_ask_all(saturated, b["key"], b_prompts))
    a_statuses = a_done.result(timeout=120)
    assert b_statuses == [200] * 5 and a_statuses == [200] * 100  # A's jobs all complete

    order = _creates(saturated, tag)
    assert sorted(order) == sorted(a_prompts + b_prompts)  # every job ran, none twice
    b_at = [i for i, p in enumerate(order) if " B" in p.split("\n")[0]]
    # Each of B's jobs starts within the next few free slots, not after A's hundred: with equal
    # weights B's five alternate with A's (give or take the two streams running when B came).
    assert b_at[0] <= started_before + 4, (started_before, b_at)
    assert b_at[-1] <= b_at[0] + 2 * 4 + 2, b_at
    assert b_at[-1] < 30


def test_weights_three_to_one_over_a_saturated_window(saturated: Cluster, tag: str) -> None:
    with saturated.admin() as admin:
        a = admin.post("/admin/keys", json={"name": "heavy"}).json()
        b = admin.post("/admin/keys", json={"name": "light"}).json()
        assert admin.put(f"/admin/weights/{a['id']}", json={"weight": 3}).status_code == 200
    a_prompts = [f"{tag} A{i:03d}\n{SHORT}" for i in range(120)]
    b_prompts = [f"{tag} B{i:03d}\n{SHORT}" for i in range(60)]
    a_done = _in_thread(_ask_all(saturated, a["key"], a_prompts))
    wait_until(lambda: _line(saturated, a["id"]) >= 100, 30, "A's jobs waiting in its line")
    b_statuses = asyncio.run(_ask_all(saturated, b["key"], b_prompts))
    assert a_done.result(timeout=180) == [200] * 120 and b_statuses == [200] * 60

    order = _creates(saturated, tag)
    assert sorted(order) == sorted(a_prompts + b_prompts)
    first_b = next(i for i, p in enumerate(order) if " B" in p.split("\n")[0])
    # From B's first job on, both keys have jobs waiting (A: 120 queued, B: 60) for 120 starts.
    window = order[first_b : first_b + 120]
    a_share = sum(" A" in p.split("\n")[0] for p in window)
    ratio = a_share / (len(window) - a_share)
    assert abs(ratio - 3) <= 0.3, (a_share, len(window) - a_share)
