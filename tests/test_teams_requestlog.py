"""The request log and the queue wait on every answer, through a real API, workers and Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from api.tenancy.requestlog import RequestLog
from shared import names
from tests.conftest import Cluster, assert_openai_error, directive, start_cluster, wait_until

MASTER = "sk-master-requestlog-test"
MODEL = "decopy-deepseek-v3"
FIELDS = {
    "time",
    "request_id",
    "key_id",
    "key_name",
    "dialect",
    "model",
    "target",
    "status",
    "error_code",
    "tokens_in",
    "tokens_out",
    "ttft_ms",
    "duration_ms",
    "queue_wait_ms",
    "client",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster({"API_MASTER_KEY": MASTER}, apis=2, workers=1)
    yield c
    c.stop()


def new_key(cluster: Cluster, name: str, **limits: Any) -> tuple[str, str]:
    with cluster.admin() as admin:
        resp = admin.post("/admin/keys", json={"name": name, **limits})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["key"]


def logged(cluster: Cluster, replica: int = 0, **params: Any) -> dict[str, Any]:
    with cluster.admin(replica) as admin:
        resp = admin.get("/admin/requests", params=params)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_logged(cluster: Cluster, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Wait until every request id is in the log (it is written a moment after the answer)."""

    def found() -> dict[str, dict[str, Any]] | None:
        entries = logged(cluster, limit=1000)["data"]
        # (.get: the trimming test below writes bare entries into this cluster's log)
        by_id = {e["request_id"]: e for e in entries if e.get("request_id") in request_ids}
        return by_id if len(by_id) == len(request_ids) else None

    return dict(wait_until(found, 15, "request-log entries"))


def test_every_chat_request_is_logged_with_its_fields_and_never_the_key(cluster: Cluster, tag: str) -> None:
    a_id, a_secret = new_key(cluster, "team-a", rpm=3)
    b_id, b_secret = new_key(cluster, "team-b")
    ids: dict[str, str] = {}
    with cluster.http(0, a_secret) as a:
        resp = a.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": f"{tag} whole"}]},
        )
        assert resp.status_code == 200, resp.text
        assert int(resp.headers["x-queue-wait-ms"]) >= 0
        ids["whole"] = resp.headers["x-request-id"]
        with a.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"{tag} stream"}]},
        ) as streamed:
            assert streamed.status_code == 200
            assert int(streamed.headers["x-queue-wait-ms"]) >= 0
            body = b"".join(streamed.iter_bytes())
        assert b"[DONE]" in body
        ids["stream"] = streamed.headers["x-request-id"]
        bad = a.post(
            "/v1/chat/completions", json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}
        )
        assert_openai_error(bad, 404)
        ids["bad"] = bad.headers["x-request-id"]
        limited = a.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "y"}]})
        assert_openai_error(limited, 429)
        ids["limited"] = limited.headers["x-request-id"]
    # A stream that fails after its 200: the entry keeps the error's code.
    failing = directive(stream_fail="cut", after=2)
    with cluster.http(1, b_secret) as b:
        with b.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"{tag}\n{failing}"}]},
        ) as streamed:
            b"".join(streamed.iter_bytes())
        ids["failed"] = streamed.headers["x-request-id"]

    entries = wait_logged(cluster, set(ids.values()))
    whole_e, stream_e, bad_e, limited_e, failed_e = (
        entries[ids[k]] for k in ("whole", "stream", "bad", "limited", "failed")
    )
    for entry in entries.values():
        assert FIELDS <= set(entry), entry
        assert entry["dialect"] == "chat"
        assert entry["client"] == "127.0.0.1"
        assert "prompt" not in entry and "answer" not in entry
    for entry in (whole_e, stream_e):
        assert (entry["key_id"], entry["key_name"], entry["status"], entry["model"]) == (a_id, "team-a", 200, MODEL)
        assert entry["error_code"] is None
        assert entry["tokens_in"] > 0 and entry["tokens_out"] > 0
        assert entry["queue_wait_ms"] >= 0 and entry["ttft_ms"] > 0 and entry["duration_ms"] >= entry["ttft_ms"]
    assert stream_e["stream"] is True and whole_e["stream"] is False
    assert (bad_e["status"], bad_e["error_code"], bad_e["queue_wait_ms"]) == (404, "model_not_found", None)
    assert (limited_e["status"], limited_e["error_code"], limited_e["key_id"]) == (429, "rate_limit_exceeded", a_id)
    assert failed_e["key_id"] == b_id and failed_e["status"] == 200 and failed_e["error_code"]

    # Neither a secret nor a prompt is anywhere in Redis' copy of the log.
    raw = redis.Redis.from_url(cluster.redis_url)
    try:
        rows: list[tuple[bytes, dict[bytes, bytes]]] = raw.xrange(names.REQUEST_LOG)  # type: ignore[assignment]
        dump = b"".join(v for _, fields in rows for v in fields.values())
    finally:
        raw.close()
    assert a_secret.encode() not in dump and b_secret.encode() not in dump and tag.encode() not in dump


def test_filters_cursor_paging_and_jsonl_export(cluster: Cluster, tag: str) -> None:
    c_id, c_secret = new_key(cluster, "team-c")
    before = time.time() - 1
    sent = set()
    with cluster.http(0, c_secret) as c:
        for i in range(5):
            resp = c.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": f"{tag} {i}"}]},
            )
            assert resp.status_code == 200, resp.text
            sent.add(resp.headers["x-request-id"])
        assert_openai_error(c.post("/v1/chat/completions", json={"model": MODEL}), 400)
    wait_logged(cluster, sent)

    mine = logged(cluster, key=c_id)["data"]
    assert {e["key_id"] for e in mine} == {c_id} and len(mine) == 6
    assert [e["id"] for e in mine] == sorted((e["id"] for e in mine), reverse=True)  # newest first
    assert {e["request_id"] for e in logged(cluster, key="team-c", status="200")["data"]} == sent
    assert len(logged(cluster, key=c_id, status="4xx")["data"]) == 1
    assert len(logged(cluster, key=c_id, status="error")["data"]) == 1
    assert len(logged(cluster, key=c_id, dialect="chat", model=MODEL)["data"]) == 5
    assert logged(cluster, key=c_id, dialect="messages")["data"] == []
    assert logged(cluster, key=c_id, until=before)["data"] == []
    assert len(logged(cluster, key=c_id, since=before)["data"]) == 6

    # Pages of two, on the other replica: each entry once, in order, then no cursor.
    pages: list[str] = []
    cursor = None
    for _ in range(10):
        page = logged(cluster, 1, key=c_id, limit=2, **({"cursor": cursor} if cursor else {}))
        pages += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert pages == [e["id"] for e in mine]

    with cluster.admin() as admin:
        resp = admin.get("/admin/requests", params={"key": c_id, "format": "jsonl"})
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in resp.text.splitlines()]
        assert [e["id"] for e in lines] == [e["id"] for e in mine]
        for params in ({"status": "teapot"}, {"since": "yesterday"}, {"cursor": "x"}, {"limit": "0"}):
            assert_openai_error(admin.get("/admin/requests", params=params), 400)
    # Only the master key reads everyone's.
    with cluster.http(0, c_secret) as c:
        assert_openai_error(c.get("/admin/requests"), 401)


def test_a_key_reads_its_own_requests_and_no_one_elses(cluster: Cluster, tag: str) -> None:
    d_id, d_secret = new_key(cluster, "team-d")
    e_id, e_secret = new_key(cluster, "team-d-twin")
    client_d = cluster.client(0, d_secret)
    client_e = cluster.client(1, e_secret)
    client_d.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"{tag} d"}])
    client_e.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"{tag} e"}])
    with cluster.http(0, d_secret) as d:

        def own() -> list[dict[str, Any]] | None:
            resp = d.get("/v1/gateway/requests", params={"key": e_id})  # asking for another key's: ignored
            assert resp.status_code == 200, resp.text
            return resp.json()["data"] or None

        entries = wait_until(own, 15, "own entries")
        assert {e["key_id"] for e in entries} == {d_id}
    with httpx.Client(base_url=cluster.bases[0], timeout=10) as anonymous:
        assert_openai_error(anonymous.get("/v1/gateway/requests"), 401)


def test_the_log_is_capped_by_count_and_by_age(cluster: Cluster) -> None:
    """The writer's trimming, on the cluster's real Redis (other tests' entries are kept by count)."""

    async def run() -> tuple[int, int]:
        from redis.asyncio import Redis

        r = Redis.from_url(cluster.redis_url)
        try:
            capped = RequestLog(r, max_entries=100, max_age=0)
            for i in range(1000):
                capped.add({"time": time.time(), "n": i})
            await capped.flush()
            by_count = int(await r.xlen(names.REQUEST_LOG))
            # Age: everything older than the age limit goes at the next write (approximately: whole nodes).
            aged = RequestLog(r, max_entries=100_000, max_age=0.5)
            await asyncio.sleep(1.0)
            for i in range(150):
                aged.add({"time": time.time(), "n": i})
            await aged.flush()
            return by_count, int(await r.xlen(names.REQUEST_LOG))
        finally:
            await r.aclose()

    by_count, by_age = asyncio.run(run())
    assert 100 <= by_count < 300  # MAXLEN ~ trims whole stream nodes (100 entries each)
    assert 150 <= by_age < 250


def test_prompts_and_answers_only_with_log_prompts(make_gateway: Any, tag: str) -> None:
    gw = make_gateway({"API_MASTER_KEY": MASTER, "LOG_PROMPTS": "true"}, workers=1)
    headers = {"Authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=gw.base_url, headers=headers, timeout=30) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"{tag} tell me"}]}
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200
        answer = resp.json()["choices"][0]["message"]["content"]

        def entry() -> dict[str, Any] | None:
            data = http.get("/admin/requests", params={"key": "master"}).json()["data"]
            return next((e for e in data if e["request_id"] == resp.headers["x-request-id"]), None)

        logged_entry = wait_until(entry, 15, "the entry")
    assert logged_entry["prompt"] == [{"role": "user", "content": f"{tag} tell me"}]
    assert logged_entry["answer"] == answer and logged_entry["key_id"] == "master"


def test_every_dialect_leaves_an_entry(cluster: Cluster, tag: str) -> None:
    key_id, secret = new_key(cluster, "team-dialects")
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": tag}]}),
        "responses": ("/v1/responses", {"input": tag}),
        "messages": ("/v1/messages", {"max_tokens": 64, "messages": [{"role": "user", "content": tag}]}),
        "completions": ("/v1/completions", {"prompt": tag}),
    }
    sent: dict[str, str] = {}
    with cluster.http(0, secret) as http:
        for dialect, (path, body) in calls.items():
            resp = http.post(path, json={"model": MODEL, **body})
            assert resp.status_code == 200, (dialect, resp.text)
            assert int(resp.headers["x-queue-wait-ms"]) >= 0
            sent[resp.headers["x-request-id"]] = dialect
    entries = wait_logged(cluster, set(sent))
    assert {e["dialect"] for e in entries.values()} == set(calls)
    for request_id, dialect in sent.items():
        entry = entries[request_id]
        assert (entry["dialect"], entry["key_id"], entry["status"]) == (dialect, key_id, 200)
        assert entry["tokens_out"] > 0 and entry["queue_wait_ms"] is not None
        assert entry["target"] == "decopy/DeepSeek-V3", entry  # the upstream/model that served it
