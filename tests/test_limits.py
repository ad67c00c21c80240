"""Team keys, rate limits and usage across two API replicas and three workers on one Redis."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import openai
import pytest
import redis

from api.__main__ import is_loopback
from api.tenancy.limits import duration
from devtools.procs import ROOT, free_port, http_ok, wait_for
from shared.tokens import estimate_tokens
from tests.conftest import Cluster, Gateway, assert_openai_error, directive, start_cluster, wait_until

MASTER = "sk-master-limits-test"
LEASE_TTL = 3.0
MODEL = "decopy-deepseek-v3"
COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "errors", "rejections")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster({"API_MASTER_KEY": MASTER, "LIMIT_LEASE_TTL": str(LEASE_TTL)}, apis=2, workers=3)
    yield c
    c.stop()


def new_key(cluster: Cluster, **fields: Any) -> tuple[str, str]:
    """Create a team key through the admin API; returns (id, secret)."""
    with cluster.admin() as admin:
        resp = admin.post("/admin/keys", json={"name": fields.pop("name", "team"), **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["key"]


def chat(http: httpx.Client, content: str, **extra: Any) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
    )


def usage_of(cluster: Cluster, key_id: str, replica: int = 0) -> dict[str, dict[str, int]]:
    with cluster.admin(replica) as admin:
        resp = admin.get("/admin/usage")
    assert resp.status_code == 200, resp.text
    (row,) = [u for u in resp.json()["data"] if u["id"] == key_id]
    return {"today": row["today"], "total": row["total"]}


def counters(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in COUNTERS}


# --- the admin API ---------------------------------------------------------------------------------


def test_admin_keys_api_shapes(cluster: Cluster) -> None:
    with cluster.admin(0) as admin:
        resp = admin.post("/admin/keys", json={"name": "research", "rpm": 60, "max_concurrent": None})
        assert resp.status_code == 201
        created = resp.json()
        assert set(created) == {"id", "key", "name", "rpm", "max_concurrent", "daily_tokens", "created"}
        assert created["key"].startswith("sk-") and len(created["key"]) == 51
        assert (created["name"], created["rpm"], created["max_concurrent"], created["daily_tokens"]) == (
            "research",
            60,
            None,
            None,
        )
        assert abs(created["created"] - time.time()) < 120

    with cluster.admin(1) as admin:  # the other replica sees it at once
        listing = admin.get("/admin/keys")
    assert listing.status_code == 200
    body = listing.json()
    assert body["object"] == "list"
    (row,) = [k for k in body["data"] if k["id"] == created["id"]]
    assert row == {
        "id": created["id"],
        "name": "research",
        "rpm": 60,
        "max_concurrent": None,
        "daily_tokens": None,
        "created": created["created"],
        "usage_today": counters(),
    }
    assert created["key"] not in listing.text

    with cluster.admin(1) as admin:
        gone = admin.delete(f"/admin/keys/{created['id']}")
        assert gone.status_code == 200 and gone.json() == {"id": created["id"], "deleted": True}
        assert_openai_error(admin.delete(f"/admin/keys/{created['id']}"), 404, "key_not_found")
        assert created["id"] not in admin.get("/admin/keys").text


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "rpm": -3}, "rpm"),
        ({"name": "x", "rpm": "10"}, "rpm"),
        ({"name": "x", "rpm": 1.5}, "rpm"),
        ({"name": "x", "max_concurrent": True}, "max_concurrent"),
        ({"name": "x", "daily_tokens": 0}, "daily_tokens"),
        ({"name": "x", "tpm": 10}, "tpm"),
        ([{"name": "x"}], None),
    ],
)
def test_admin_bad_bodies_are_400_and_create_nothing(cluster: Cluster, body: Any, param: str | None) -> None:
    with cluster.admin() as admin:
        before = admin.get("/admin/keys").json()["data"]
        err = assert_openai_error(admin.post("/admin/keys", json=body), 400)
        assert err["type"] == "invalid_request_error" and err["param"] == param
        assert admin.get("/admin/keys").json()["data"] == before


def test_admin_errors_are_openai_shaped(cluster: Cluster) -> None:
    key_id, secret = new_key(cluster)
    with cluster.http(0) as anon:
        assert_openai_error(anon.get("/admin/keys"), 401, "missing_api_key")
    with cluster.http(1, "sk-wrong") as wrong:
        assert_openai_error(wrong.get("/admin/usage"), 401, "invalid_api_key")
    with cluster.http(0, secret) as team:  # a team key is no admin key
        assert_openai_error(team.get("/admin/keys"), 401)
        assert_openai_error(team.delete(f"/admin/keys/{key_id}"), 401)
    with cluster.admin(1) as admin:
        assert_openai_error(
            admin.post("/admin/keys", content=b'{"name": ', headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        assert_openai_error(
            admin.post("/admin/keys", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"}),
            415,
        )
        assert_openai_error(admin.delete("/admin/keys/key_doesnotexist"), 404, "key_not_found")
        assert_openai_error(admin.put("/admin/keys"), 405)
        assert_openai_error(admin.get("/admin/nothing"), 404)
    with cluster.http(0, secret) as team:  # the failed attempts changed nothing
        assert team.get("/v1/models").status_code == 200


# --- rate limits across replicas -----------------------------------------------------------------


def rejections_in_stats(cluster: Cluster) -> int:
    with cluster.admin() as admin:
        return int(admin.get("/admin/stats").json()["rate_limit_rejections"])


def test_rpm_holds_across_replicas(cluster: Cluster, tag: str) -> None:
    rejections_before = rejections_in_stats(cluster)
    key_id, secret = new_key(cluster, name=tag, rpm=10)
    a, b = cluster.http(0, secret), cluster.http(1, secret)
    completion_tokens = 0
    with a, b:
        for i in range(10):
            if i % 3 == 0:  # some streamed: the headers go on the SSE answer too
                resp = chat((a, b)[i % 2], f"{tag} {i}", stream=True, stream_options={"include_usage": True})
                assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
                last = [ln for ln in resp.text.splitlines() if ln.startswith("data: {")][-1]
                completion_tokens += json.loads(last[len("data: ") :])["usage"]["completion_tokens"]
            else:
                resp = chat((a, b)[i % 2], f"{tag} {i}")
                assert resp.status_code == 200, resp.text
                completion_tokens += resp.json()["usage"]["completion_tokens"]
            assert resp.headers["x-ratelimit-limit-requests"] == "10"
            assert resp.headers["x-ratelimit-remaining-requests"] == str(9 - i)
            assert resp.headers["x-ratelimit-reset-requests"].endswith("s")
            assert "x-ratelimit-limit-tokens" not in resp.headers  # no token limit on this key
        for replica in (a, b, a):  # the 11th request, whichever replica it reaches
            resp = chat(replica, f"{tag} over")
            err = assert_openai_error(resp, 429, "rate_limit_exceeded")
            assert err["type"] == "rate_limit_error"
            assert 1 <= int(resp.headers["retry-after"]) <= 60
            assert resp.headers["x-ratelimit-remaining-requests"] == "0"
            assert resp.headers["x-ratelimit-limit-requests"] == "10"
        # every /v1 answer carries the headers, errors included
        for resp in (a.get("/v1/models/nope"), b.get("/v1/nothing")):
            assert resp.status_code == 429 and resp.headers["x-ratelimit-remaining-requests"] == "0"
    sent = [e for e in cluster.sim_log() if tag in (e.get("entertext") or "") and e["kind"] == "create"]
    assert len(sent) == 10  # the refused ones never reached the upstream
    assert usage_of(cluster, key_id)["today"] == counters(
        requests=10,
        rejections=5,
        prompt_tokens=sum(estimate_tokens(f"{tag} {i}") for i in range(10)),
        completion_tokens=completion_tokens,
    )
    # the same rejections in the metrics: per replica on /metrics, cluster-wide in /admin/stats
    for index, expected in ((0, 3), (1, 2)):
        page = httpx.get(cluster.bases[index] + "/metrics", timeout=10).text
        lines = [
            ln
            for ln in page.splitlines()
            if ln.startswith("decopy_rate_limit_rejections_total{") and f'key="{key_id}"' in ln
        ]
        assert sum(float(ln.rsplit(" ", 1)[1]) for ln in lines) == expected, lines
        assert tag not in page  # labelled by key id: /metrics needs no key and must not name teams
    wait_until(lambda: rejections_in_stats(cluster) >= rejections_before + 5, 15, "rejections in /admin/stats")


def test_rpm_burst_across_replicas_is_exact(cluster: Cluster) -> None:
    key_id, secret = new_key(cluster, rpm=10)
    clients = [cluster.http(0, secret), cluster.http(1, secret)]
    barrier = threading.Barrier(40)

    def one(i: int) -> httpx.Response:
        barrier.wait(30)
        return clients[i % 2].get("/v1/models")

    try:
        with ThreadPoolExecutor(40) as pool:
            statuses = sorted(r.status_code for r in pool.map(one, range(40)))
    finally:
        for c in clients:
            c.close()
    assert statuses == [200] * 10 + [429] * 30
    assert usage_of(cluster, key_id, 1)["today"] == counters(requests=10, rejections=30)


def _slow_stream(client: openai.OpenAI, content: str, started: threading.Event) -> str:
    stream = client.chat.completions.create(model=MODEL, stream=True, messages=[{"role": "user", "content": content}])
    text = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
            started.set()
    return "".join(text)


def test_max_concurrent_across_replicas_and_leases_renewed(cluster: Cluster, tag: str) -> None:
    key_id, secret = new_key(cluster, max_concurrent=2)
    # Two streams, one per replica, each running well past the lease TTL (12 pieces, 0.6 s apart).
    pieces = [f"p{i} " for i in range(12)]
    slow = f"{tag} " + directive(reply=pieces, interval_ms=600)
    started = [threading.Event(), threading.Event()]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_slow_stream, cluster.client(i, secret), slow, started[i]) for i in (0, 1)]
        for ev in started:
            assert ev.wait(30)
        t0 = time.monotonic()  # both leases were taken before this
        with cluster.http(0, secret) as a, cluster.http(1, secret) as b:
            for replica in (a, b):
                resp = chat(replica, "third", stream=True)
                assert_openai_error(resp, 429, "rate_limit_exceeded")
                assert "concurrent" in resp.json()["error"]["message"] and resp.headers["retry-after"] == "1"
            # other endpoints hold no slot
            assert a.get("/v1/models").status_code == 200
            # past the lease TTL the slots are still held: the streams renew their leases
            wait_until(lambda: time.monotonic() - t0 > LEASE_TTL * 1.5, 30)
            assert not all(f.done() for f in futures)
            assert_openai_error(chat(b, "still full"), 429, "rate_limit_exceeded")
        assert [f.result(60) for f in futures] == ["".join(pieces)] * 2
    with cluster.http(1, secret) as b:  # both slots are free again
        for _ in range(2):
            assert chat(b, f"{tag} after").status_code == 200
    used = usage_of(cluster, key_id)["today"]
    assert (used["requests"], used["rejections"], used["errors"]) == (5, 3, 0)
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        assert r.zcard(f"decopy:rl:conc:{key_id}") == 0  # released, not left to expire
    finally:
        r.close()


def test_daily_tokens_across_replicas(cluster: Cluster, tag: str) -> None:
    prompt = f"{tag} " + directive(n=40)
    p, c = estimate_tokens(prompt), estimate_tokens("".join(f"tok{i} " for i in range(40)))
    budget = 2 * p + c + c // 2  # the second request fits (p + c + p), the third does not (2p + 2c)
    key_id, secret = new_key(cluster, daily_tokens=budget)
    with cluster.http(0, secret) as a, cluster.http(1, secret) as b:
        first = chat(a, prompt)
        assert first.status_code == 200
        assert first.json()["usage"] == {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        assert (first.headers["x-ratelimit-limit-tokens"], first.headers["x-ratelimit-remaining-tokens"]) == (
            str(budget),
            str(budget),
        )
        second = chat(b, prompt)
        assert second.status_code == 200
        assert second.headers["x-ratelimit-remaining-tokens"] == str(budget - p - c)
        for replica in (a, b):
            resp = chat(replica, prompt)
            err = assert_openai_error(resp, 429, "rate_limit_exceeded")
            assert "tokens per day" in err["message"]
            assert resp.headers["x-ratelimit-remaining-tokens"] == "0"
            assert resp.headers["x-ratelimit-reset-tokens"].endswith("s")
            assert 1 <= int(resp.headers["retry-after"]) <= 86400
            assert "x-ratelimit-limit-requests" not in resp.headers  # no rpm on this key
    assert usage_of(cluster, key_id)["today"] == counters(
        requests=2, rejections=2, prompt_tokens=2 * p, completion_tokens=2 * c
    )


def test_prompt_larger_than_the_days_budget_is_refused(cluster: Cluster, tag: str) -> None:
    key_id, secret = new_key(cluster, daily_tokens=10, rpm=5)
    with cluster.http(1, secret) as b:
        resp = chat(b, f"{tag} " + "word " * 40)
        err = assert_openai_error(resp, 429, "rate_limit_exceeded")
        assert "this prompt" in err["message"]
        assert resp.headers["x-ratelimit-remaining-requests"] == "4"  # taken at admission...
        ok = chat(b, "hi " + directive(reply=["fine"]))
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-remaining-requests"] == "4"  # ...and given back: the refusal cost nothing
    assert not [e for e in cluster.sim_log() if tag in (e.get("entertext") or "")]
    assert usage_of(cluster, key_id)["today"] == counters(
        requests=1,
        rejections=1,
        prompt_tokens=estimate_tokens("hi " + directive(reply=["fine"])),
        completion_tokens=estimate_tokens("fine"),
    )


def test_revocation_takes_effect_on_every_replica(cluster: Cluster) -> None:
    key_id, secret = new_key(cluster)
    a, b = cluster.client(0, secret), cluster.client(1, secret)
    assert a.models.list().data and b.models.list().data
    with cluster.admin(0) as admin:
        assert admin.delete(f"/admin/keys/{key_id}").status_code == 200
    for client in (b, a):  # the very next request, on either replica
        with pytest.raises(openai.AuthenticationError) as exc:
            client.models.list()
        assert exc.value.status_code == 401


def test_usage_figures_match_what_was_sent(cluster: Cluster, tag: str) -> None:
    key_id, secret = new_key(cluster, rpm=6, name="accounting")
    a, b = cluster.client(0, secret), cluster.client(1, secret)
    prompt_tokens = completion_tokens = 0

    for client, reply in ((a, ["Hello", " there"]), (b, ["中文", "回答"])):  # two whole answers
        resp = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"{tag} " + directive(reply=reply)}]
        )
        assert resp.usage is not None
        prompt_tokens += resp.usage.prompt_tokens
        completion_tokens += resp.usage.completion_tokens

    stream = b.chat.completions.create(  # a streamed answer, its usage reported by the stream itself
        model=MODEL,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=["one ", "two ", "three"])}],
    )
    final = [c.usage for c in stream if c.usage is not None]
    prompt_tokens += final[0].prompt_tokens
    completion_tokens += final[0].completion_tokens

    failing = f"{tag} " + directive(create_fail="500")  # upstream fails before any text: 502
    with pytest.raises(openai.APIStatusError) as exc:
        a.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": failing}])
    assert exc.value.status_code == 502
    prompt_tokens += estimate_tokens(failing)

    cut = f"{tag} " + directive(reply=["abcd", "efgh", "ijkl", "mnop"], stream_fail="truncate", truncate_after=2)
    seen = []
    with pytest.raises(openai.APIError):  # fails after text went out: an error event ends the 200 stream
        for chunk in b.chat.completions.create(model=MODEL, stream=True, messages=[{"role": "user", "content": cut}]):
            if chunk.choices:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "abcdefgh"
    prompt_tokens += estimate_tokens(cut)
    completion_tokens += estimate_tokens("abcdefgh")

    with pytest.raises(openai.BadRequestError):  # refused by validation: an error, no tokens
        a.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.RateLimitError):  # the 7th request in the minute
        b.models.list()

    expected = counters(
        requests=6, errors=3, rejections=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )
    for replica in (0, 1):
        assert usage_of(cluster, key_id, replica) == {"today": expected, "total": expected}
    with cluster.admin(1) as admin:
        (row,) = [k for k in admin.get("/admin/keys").json()["data"] if k["id"] == key_id]
    assert row["usage_today"] == expected
    cli = run_cli(cluster, "usage", "--json")
    assert cli.returncode == 0, cli.stderr
    (from_cli,) = [u for u in json.loads(cli.stdout)["data"] if u["id"] == key_id]
    assert from_cli == {"id": key_id, "name": "accounting", "today": expected, "total": expected}


def test_master_key_is_never_limited(cluster: Cluster, tag: str) -> None:
    master_a, master_b = cluster.http(0, MASTER), cluster.http(1, MASTER)
    with master_a, master_b:
        for i in range(30):
            resp = (master_a, master_b)[i % 2].get("/v1/models")
            assert resp.status_code == 200
            assert not [h for h in resp.headers if h.startswith("x-ratelimit")]
        resp = chat(master_b, f"{tag} as master")
        assert resp.status_code == 200 and not [h for h in resp.headers if h.startswith("x-ratelimit")]
    with cluster.admin() as admin:  # the master key is no team key: it has no usage row
        assert all(u["name"] != "master" for u in admin.get("/admin/usage").json()["data"])


def test_killed_replica_leaks_its_slot_no_longer_than_the_lease(cluster: Cluster, tag: str) -> None:
    key_id, secret = new_key(cluster, max_concurrent=1)
    started = threading.Event()
    long_stream = f"{tag} " + directive(n=32, interval_ms=250)  # 8 s: longer than the test needs the slot

    def stream_on_a() -> None:
        try:
            _slow_stream(cluster.client(0, secret), long_stream, started)
        except (openai.APIError, httpx.HTTPError):
            pass  # its replica is killed under it

    thread = threading.Thread(target=stream_on_a, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        with cluster.http(1, secret) as b, redis.Redis.from_url(cluster.redis_url) as r:
            assert_openai_error(chat(b, "full"), 429, "rate_limit_exceeded")
            cluster.apis[0].signal(signal.SIGKILL)
            cluster.apis[0].popen.wait(30)
            # The dead replica's lease is left behind (nobody renews or releases it now); its score
            # is when it expires, on Redis's clock, which the limiter reads too.
            leases = cast(list[tuple[bytes, float]], r.zrange(f"decopy:rl:conc:{key_id}", 0, -1, withscores=True))
            assert len(leases) == 1, leases
            expires_ms = leases[0][1]

            def redis_ms() -> float:
                seconds, micros = cast(tuple[int, int], r.time())
                return seconds * 1000 + micros / 1000

            def probe() -> httpx.Response | None:
                resp = chat(b, f"{tag} probe")
                if resp.status_code == 429:
                    return None
                # Never before the lease expired: the slot is held while the lease stands...
                assert redis_ms() >= expires_ms, "the slot came back before the dead replica's lease expired"
                return resp

            # ...and given back once it lapses (the wait bounds the leak: LEASE_TTL plus a loaded machine).
            resp = wait_until(probe, LEASE_TTL + 20, "the dead replica's slot given back")
        assert resp.status_code == 200, resp.text
    finally:
        thread.join(30)
        restart_replica(cluster, 0)


def restart_replica(cluster: Cluster, replica: int) -> None:
    if cluster.apis[replica].alive():
        return
    port = int(cluster.bases[replica].rsplit(":", 1)[1])
    proc, base = cluster.stack.api(cluster.env, port=port)
    cluster.apis[replica] = proc
    assert base == cluster.bases[replica]


# --- secrets ---------------------------------------------------------------------------------------


def _redis_dump(r: Any) -> bytes:  # sync redis-py, whose stubs mix in its async return types
    out = []
    for name in r.scan_iter(count=1000):
        out.append(name)
        kind = r.type(name)
        if kind == b"string":
            out.append(r.get(name) or b"")
        elif kind == b"hash":
            for k, v in r.hgetall(name).items():
                out += [k, v]
        elif kind == b"set":
            out += list(r.smembers(name))
        elif kind == b"zset":
            out += [m for m, _ in r.zrange(name, 0, -1, withscores=True)]
        elif kind == b"list":
            out += r.lrange(name, 0, -1)
    return b"\n".join(out)


def test_keys_never_stored_nor_logged_in_plain_text(cluster: Cluster, tag: str) -> None:
    key_id, secret = new_key(cluster, rpm=2, name="secretive")
    with cluster.http(0, secret) as a, cluster.http(1, secret) as b:
        assert chat(a, f"{tag} one").status_code == 200
        assert chat(b, f"{tag} two").status_code == 200
        assert chat(a, f"{tag} three").status_code == 429
    with cluster.http(1, secret[:-1] + ("A" if secret[-1] != "A" else "B")) as near:
        assert near.get("/v1/models").status_code == 401
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        dump = _redis_dump(r)
    finally:
        r.close()
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in dump  # the scan sees the key's record...
    assert key_id.encode() in dump
    for needle in (secret, secret[3:], secret[3:27], secret[27:]):  # ...and nothing of its secret
        assert needle.encode() not in dump
        assert needle not in cluster.logs()


# --- Redis down, start-up, CLI ---------------------------------------------------------------------


def test_redis_down_during_auth_is_503(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"API_MASTER_KEY": MASTER}, workers=0)
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30) as admin:
        secret = admin.post("/admin/keys", json={"name": "t", "rpm": 100}).json()["key"]
        redis_proc = next(p for p in gw.stack.procs if p.name == "redis")
        redis_proc.signal(signal.SIGKILL)
        redis_proc.popen.wait(10)
        with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as team:
            for _ in range(2):
                err = assert_openai_error(team.get("/v1/models"), 503)
                assert err["type"] == "server_error"
                assert_openai_error(chat(team, "hi"), 503)
        assert_openai_error(admin.get("/admin/keys"), 503)
        assert_openai_error(admin.post("/admin/keys", json={"name": "u"}), 503)
        assert admin.get("/v1/models").status_code == 200  # the master key needs no Redis to authenticate
    assert "Traceback" not in gw.api_proc.log()


def test_reset_durations_are_written_like_openai() -> None:
    assert [duration(s) for s in (0, 0.02, 0.9994, 1, 6, 42.5, 60, 90.25, 3600, 7322)] == [
        "0ms",
        "20ms",
        "999ms",
        "1s",
        "6s",
        "42.5s",
        "1m0s",
        "1m30.25s",
        "1h0m0s",
        "2h2m2s",
    ]


def test_is_loopback() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", ""):
        assert not is_loopback(host), host


def _api_env(**env: str) -> dict[str, str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "REDIS_URL"))}
    return {**base, "PYTHONUNBUFFERED": "1", **env}


def test_open_gateway_refused_on_a_public_address() -> None:
    port = str(free_port())
    refused = subprocess.run(
        [sys.executable, "-m", "api"],
        env=_api_env(API_HOST="0.0.0.0", API_PORT=port),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "API_MASTER_KEY" in lines[0] and "API_ALLOW_OPEN" in lines[0]
    assert not port_listening(int(port))
    refused = subprocess.run(
        [sys.executable, "-m", "api", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_api_env(API_HOST="0.0.0.0", API_PORT=port, API_ALLOW_OPEN="false"),
        timeout=60,
    )
    assert refused.returncode == 2


def port_listening(port: int) -> bool:
    return http_ok(f"http://127.0.0.1:{port}/healthz")


def test_open_gateway_allowed_on_purpose(cluster: Cluster) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_api_env(API_HOST="0.0.0.0", API_PORT=str(port), API_ALLOW_OPEN="true", REDIS_URL=cluster.redis_url),
    )
    try:
        wait_for(lambda: port_listening(port), 30, "open api", proc)
    finally:
        proc.terminate()
        proc.wait(20)


def run_cli(cluster: Cluster, *args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=_api_env(REDIS_URL=redis_url or cluster.redis_url),
    )


def test_cli_manages_the_same_keys(cluster: Cluster) -> None:
    made = run_cli(cluster, "keys", "create", "--name", "from-cli", "--rpm", "3", "--daily-tokens", "5000", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert (created["name"], created["rpm"], created["max_concurrent"], created["daily_tokens"]) == (
        "from-cli",
        3,
        None,
        5000,
    )
    secret = created["key"]
    with cluster.http(1, secret) as b:  # the API honours it, with its limits
        resp = b.get("/v1/models")
        assert resp.status_code == 200 and resp.headers["x-ratelimit-limit-requests"] == "3"
    with cluster.admin(0) as admin:  # the admin API lists it
        assert created["id"] in [k["id"] for k in admin.get("/admin/keys").json()["data"]]

    table = run_cli(cluster, "keys", "list")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "RPM", "MAX_CONCURRENT", "DAILY_TOKENS"]
    (row,) = [r for r in rows if r.startswith(created["id"])]
    assert row.split()[1:5] == ["from-cli", "3", "-", "5000"]
    assert secret not in table.stdout
    listed = json.loads(run_cli(cluster, "keys", "list", "--json").stdout)
    (mine,) = [k for k in listed["data"] if k["id"] == created["id"]]
    assert mine["usage_today"]["requests"] == 1

    usage = run_cli(cluster, "usage")
    assert usage.returncode == 0 and created["id"] in usage.stdout and "PROMPT_TOKENS" in usage.stdout

    revoked = run_cli(cluster, "keys", "revoke", created["id"])
    assert revoked.returncode == 0 and created["id"] in revoked.stdout
    with cluster.http(0, secret) as a:
        assert a.get("/v1/models").status_code == 401
    again = run_cli(cluster, "keys", "revoke", created["id"])
    assert again.returncode == 1 and "no key" in again.stderr


def test_cli_bad_arguments_exit_2_and_change_nothing(cluster: Cluster) -> None:
    before = run_cli(cluster, "keys", "list", "--json").stdout
    for args in (
        ("keys", "create", "--name", "x", "--rpm", "0"),
        ("keys", "create", "--name", ""),
        ("keys", "create", "--name", "x", "--rpm", "many"),
        ("keys", "create"),
        ("keys", "frobnicate"),
    ):
        result = run_cli(cluster, *args)
        assert result.returncode == 2 and result.stderr.strip(), args
    assert run_cli(cluster, "keys", "list", "--json").stdout == before


def test_cli_without_redis_exits_1(cluster: Cluster) -> None:
    result = run_cli(cluster, "keys", "list", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "Redis" in result.stderr and "Traceback" not in result.stderr
