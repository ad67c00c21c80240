"""Upstreams and routes against real processes: an OpenAI-compatible upstream (tests/openai_sim.py),
routes falling back from decopy, the admin API, live changes across replicas, the circuit breaker."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from devtools.procs import Stack, wait_for, wait_workers
from tests.conftest import assert_openai_error, directive, wait_until

MASTER = "sk-master-upstreams"
SECRET = "sk-local-upstream-secret-1234"
# A port bound and never listened on, held for the whole run: a connection there is refused, and no
# other process can take the port meanwhile (a port merely found free could be reused).
_DEAD = socket.socket()
_DEAD.bind(("127.0.0.1", 0))
DEAD_PORT = _DEAD.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _dead_port_released() -> Iterator[None]:
    """Closes the held port after this file's tests (left open, it warned at interpreter exit)."""
    yield
    _DEAD.close()


def start_openai_sim(stack: Stack) -> str:
    proc = stack.spawn("oai", [sys.executable, "-m", "tests.openai_sim", "--port", "0"])
    url = ""

    def ready() -> bool:
        nonlocal url
        for line in proc.log().splitlines():
            if line.startswith("SIM_READY "):
                url = line.split(" ", 1)[1].strip()
                return True
        return False

    wait_for(ready, 15, "openai simulator", proc.popen)
    return url


def oai(**fields: Any) -> str:
    return "@@oai@@ " + json.dumps(fields)


class Env:
    """A stack: Redis, both simulators, ``apis`` API processes and ``workers`` workers."""

    def __init__(self, extra: dict[str, str] | None = None, *, apis: int = 1, workers: int = 2) -> None:
        self.stack = Stack()
        try:
            _, self.redis_url = self.stack.redis()
            _, self.sim_url = self.stack.simulator()
            self.oai_url = start_openai_sim(self.stack)
            upstreams = {
                "local": {
                    "kind": "openai",
                    "base_url": self.oai_url,
                    "api_key_env": "LOCAL_SIM_KEY",
                    "headers": {"X-Team": "blue"},
                    "native_tools": True,
                },
                "decopy-dead": {"kind": "decopy", "base_url": f"http://127.0.0.1:{DEAD_PORT}"},
            }
            routes = {
                "smart": [
                    {"upstream": "decopy", "model": "DeepSeek-V3"},
                    {"upstream": "decopy-dead", "model": "DeepSeek-V3"},
                    {"upstream": "local", "model": "qwen"},
                ],
                "local-model": [{"upstream": "local", "model": "qwen"}],
                "solo": [{"upstream": "local", "model": "solo"}],
                "pair": [{"upstream": "local", "model": "first"}, {"upstream": "local", "model": "second"}],
            }
            self.env = {
                "REDIS_URL": self.redis_url,
                "DECOPY_BASE_URL": self.sim_url,
                "UPSTREAM_BACKOFF_BASE": "0.05",
                "UPSTREAM_BACKOFF_MAX": "0.2",
                "API_MASTER_KEY": MASTER,
                "LOCAL_SIM_KEY": SECRET,
                "UPSTREAMS": json.dumps(upstreams),
                "ROUTES": json.dumps(routes),
                **(extra or {}),
            }
            self.workers = [self.stack.worker(self.env) for _ in range(workers)]
            self.bases = [self.stack.api(self.env)[1] for _ in range(apis)]
            wait_workers(self.redis_url, workers)
        except BaseException:
            self.stack.stop()
            raise
        self._clients: list[openai.OpenAI] = []

    def client(self, replica: int = 0) -> openai.OpenAI:
        c = openai.OpenAI(base_url=self.bases[replica] + "/v1", api_key=MASTER, max_retries=0, timeout=30)
        self._clients.append(c)
        return c

    def http(self, replica: int = 0, key: str | None = MASTER) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.bases[replica], headers=headers, timeout=30)

    def oai_log(self, needle: str) -> list[dict[str, Any]]:
        log = httpx.get(self.oai_url.removesuffix("/v1") + "/_sim/log", timeout=5).json()
        return [e for e in log if needle in json.dumps(e["messages"])]

    def sim_log(self, needle: str) -> list[dict[str, Any]]:
        log = httpx.get(self.sim_url + "/_sim/log", timeout=5).json()
        return [e for e in log if needle in (e.get("entertext") or "")]

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.stack.procs)

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self.stack.stop()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    # Breakers never open here (the failure tests would open them for the others); they have
    # their own test and stack below.
    e = Env({"BREAKER_FAILURES": "0"})
    yield e
    e.stop()


def chat(http: httpx.Client, model: str, content: str, **extra: Any) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **extra}
    )


# --- the OpenAI-compatible upstream ------------------------------------------------------------


def test_openai_upstream_streams_reasoning_and_text(env: Env, tag: str) -> None:
    prompt = f"{tag}\n{oai(reasoning=['Let me ', 'think.'], reply=['Hel', 'lo ', 'there'])}"
    raw = env.client().chat.completions.with_raw_response.create(
        model="local-model", messages=[{"role": "user", "content": prompt}], stream=True
    )
    assert raw.headers["x-gateway-upstream"] == "local/qwen"
    content, reasoning, finish = [], [], None
    for chunk in raw.parse():
        if chunk.choices:
            delta = chunk.choices[0].delta
            content.append(delta.content or "")
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(content) == "Hello there"
    assert "".join(reasoning) == "Let me think."
    assert finish == "stop"
    (entry,) = env.oai_log(tag)
    assert entry["model"] == "qwen" and entry["stream"] is True
    assert entry["authorization"] == f"Bearer {SECRET}"  # read from the environment variable named
    assert entry["x_headers"].get("x-team") == "blue"
    assert entry["messages"] == [{"role": "user", "content": prompt}]


def test_openai_upstream_whole_answer_and_header(env: Env, tag: str) -> None:
    with env.http() as http:
        resp = chat(http, "local-model", f"{tag} {oai(reasoning=['hm'], reply=['four'])}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-gateway-upstream"] == "local/qwen"
    message = resp.json()["choices"][0]["message"]
    assert message["content"] == "four" and message["reasoning_content"] == "hm"
    request_id = resp.headers["x-request-id"]

    def logged() -> bool:
        lines = [json.loads(ln) for ln in env.logs().splitlines() if request_id in ln and '"api.access"' in ln]
        return any(line.get("upstream") == "local/qwen" for line in lines)

    wait_until(logged, 5, "the access log names the upstream")


def run_job(env: Env, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Enqueue ``job`` as the API does and collect its channel's messages (a real worker runs it).

    Used where the API's parser does not take the request yet (tools), so the worker's side is
    proven on its own."""
    import asyncio

    from redis.asyncio import Redis

    from api.relay.queue import JobQueue, new_job_id
    from shared import messages, names

    async def go() -> list[dict[str, Any]]:
        redis = Redis.from_url(env.redis_url)
        pubsub = redis.pubsub()
        job_id = new_job_id()
        await pubsub.subscribe(names.job_channel(job_id))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        assert await JobQueue(redis, max_queue=100, expires_s=10).enqueue(job_id, job)
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg is None:
                continue
            got.append(dict(messages.decode(msg["data"])))
            if got[-1]["kind"] in ("done", "error"):
                break
        await pubsub.aclose()
        await redis.aclose()
        return got

    return asyncio.run(go())


def test_native_tool_calls_pass_through(env: Env, tag: str) -> None:
    """A target with native tools gets the structured turns and the tools as OpenAI's (no
    emulation folded into a prompt); its tool calls come back as ``tool_call`` messages."""
    d = oai(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    job = {
        "request_id": "req_" + tag,
        "model": "local-model",
        "upstream_model": "qwen",
        "prompt": f"System: Be brief.\n\nUser: {tag} weather? {d}",
        "image": None,
        "turns": [{"role": "system", "text": "Be brief."}, {"role": "user", "text": f"{tag} weather? {d}"}],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "tool_choice": {"name": "get_weather"},
        "parallel_tool_calls": False,
        "output": None,
    }
    got = run_job(env, job)
    kinds = [m["kind"] for m in got]
    assert kinds[0] == "start" and kinds[-1] == "done", got
    (call_msg,) = [m for m in got if m["kind"] == "tool_call"]
    assert call_msg["upstream"] == "local/qwen"  # the first piece names the target
    assert call_msg["call"]["name"] == "get_weather"
    assert json.loads(call_msg["call"]["arguments"]) == {"city": "Paris"}
    assert got[-1]["finish_reason"] == "tool_calls"
    (entry,) = env.oai_log(tag)
    assert [m["role"] for m in entry["messages"]] == ["system", "user"]
    assert entry["messages"][0]["content"] == "Be brief."
    assert entry["tools"][0]["function"]["name"] == "get_weather"
    assert entry["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert entry["parallel_tool_calls"] is False


def test_json_output_passes_natively(env: Env, tag: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    d = oai(reply=['{"n": ', "3}"])
    job = {
        "request_id": "req_" + tag,
        "model": "local-model",
        "upstream_model": "qwen",
        "prompt": f"{tag} count",
        "image": None,
        "turns": [{"role": "user", "text": f"{tag} count {d}"}],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "output": {"type": "json_schema", "name": "count", "schema": schema, "strict": True},
    }
    got = run_job(env, job)
    assert "".join(m.get("text", "") for m in got if m["kind"] == "delta") == '{"n": 3}'
    (entry,) = env.oai_log(tag)
    assert entry["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "count", "schema": schema, "strict": True},
    }
    assert "tools" not in entry or entry["tools"] is None


@pytest.mark.parametrize(
    "fail, status, code",
    [
        ("500", 502, "upstream_http"),
        ("401", 502, "upstream_http"),
        ("truncate", 502, "upstream_protocol"),
        ("html", 502, "upstream_protocol"),
    ],
)
def test_openai_failures_are_typed(env: Env, tag: str, fail: str, status: int, code: str) -> None:
    with env.http() as http:
        resp = chat(http, "solo", f"{tag} {oai(fail=fail, after=0)}")
    assert_openai_error(resp, status, code)
    tries = len(env.oai_log(tag))
    assert tries == (1 if fail == "401" else 4)  # a 401 is final; the others are retried (UPSTREAM_RETRIES=3)


def test_openai_429_retry_after_reaches_the_client(env: Env, tag: str) -> None:
    with env.http() as http:
        resp = chat(http, "solo", f"{tag} {oai(fail='429', retry_after=7)}")
    assert_openai_error(resp, 503, "upstream_rate_limited")
    assert resp.headers["retry-after"] == "7"


def test_openai_timeouts_and_refused_connections_are_typed(env: Env, tag: str) -> None:
    """The worker's client on its own (what it raises decides retries and fallback)."""
    import asyncio

    from shared.routing import UpstreamConfig
    from shared.settings import Settings
    from worker.upstream.base import UpstreamFailure
    from worker.upstream.openai_compat import OpenAIUpstream

    async def first_failure(base_url: str, text: str) -> UpstreamFailure:
        upstream = OpenAIUpstream(
            UpstreamConfig(name="t", kind="openai", base_url=base_url),
            Settings(upstream_read_timeout=0.5, upstream_connect_timeout=2),
        )
        job: Any = {"request_id": "r", "model": "m", "upstream_model": "m", "prompt": text, "image": None}
        try:
            async for _ in upstream.pieces(job):
                pass
        except UpstreamFailure as failure:
            return failure
        finally:
            await upstream.aclose()
        raise AssertionError("no failure")

    silent = asyncio.run(first_failure(env.oai_url, f"{tag} {oai(fail='hang', after=0, hang_ms=3000)}"))
    assert (silent.kind, silent.retryable) == ("timeout", True) and "ReadTimeout" in silent.message
    refused = asyncio.run(first_failure(f"http://127.0.0.1:{DEAD_PORT}/v1", "hi"))
    assert (refused.kind, refused.retryable) == ("connection", True) and "ConnectionError" in refused.message


# --- routes and fallback -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cloudflare", "429"])
def test_route_falls_back_from_decopy_within_one_request(env: Env, tag: str, mode: str) -> None:
    """decopy fails (a Cloudflare page, or 429), the second target is a dead port: the third answers."""
    prompt = f"{tag}\n{directive(create_fail=mode)}"
    raw = env.client().chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": prompt}], stream=True
    )
    assert raw.headers["x-gateway-upstream"] == "local/qwen"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == f"Hi from qwen: {tag}"
    assert [e["outcome"] for e in env.sim_log(tag)] == [f"failed:{mode}"]  # decopy once, no retry first
    assert len(env.oai_log(tag)) == 1
    assert "attempt 2 (decopy-dead/DeepSeek-V3) failed" in env.logs()


def test_default_route_still_goes_to_decopy(env: Env, tag: str) -> None:
    with env.http() as http:
        resp = chat(http, "decopy-deepseek-v3", f"{tag} hello")
        models = http.get("/v1/models").json()["data"]
    assert resp.status_code == 200 and resp.headers["x-gateway-upstream"] == "decopy/DeepSeek-V3"
    assert [e["kind"] for e in env.sim_log(tag)] == ["create", "stream"] and not env.oai_log(tag)
    by_id = {m["id"]: m for m in models}
    assert by_id["smart"]["targets"] == ["decopy/DeepSeek-V3", "decopy-dead/DeepSeek-V3", "local/qwen"]
    assert by_id["decopy-deepseek-v3"]["targets"] == ["decopy/DeepSeek-V3"]
    assert by_id["local-model"]["owned_by"] == "local"


def test_no_fallback_after_the_first_piece(env: Env, tag: str) -> None:
    """The first target cuts its stream after two pieces: the client gets those and an error, and
    the second target is never asked (the client would otherwise get two answers)."""
    prompt = f"{tag} {oai(fail='cut', only='first', after=3, reply=['one ', 'two ', 'three'])}"
    stream = env.client().chat.completions.create(
        model="pair", messages=[{"role": "user", "content": prompt}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "one two "
    assert [e["model"] for e in env.oai_log(tag)] == ["first"]
    # decopy likewise: cut after its first pieces, never handed to the next target
    d = directive(stream_fail="cut", after=2, n=6)
    stream = env.client().chat.completions.create(
        model="smart", messages=[{"role": "user", "content": f"{tag}-d {d}"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert not env.oai_log(f"{tag}-d")


def test_doctor_upstreams_one_section_per_target(env: Env, tag: str) -> None:
    import os
    import subprocess

    from devtools.procs import ROOT

    with env.http() as http:  # one fallback: decopy refused, the dead port failed, local answered
        resp = chat(http, "smart", f"{tag} {directive(create_fail='cloudflare')}")
    assert resp.headers["x-gateway-upstream"] == "local/qwen"

    done = subprocess.run(
        [sys.executable, "-m", "worker", "doctor", "--upstreams"],
        cwd=ROOT,
        env={**os.environ, **env.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # the dead port does not answer
    assert "[ ok ] decopy/DeepSeek-V3" in out and "[ ok ] local/qwen" in out
    assert "[FAIL] decopy-dead/DeepSeek-V3" in out and "ConnectionError" in out
    # the dead target's breaker section shows the failure that request left
    section = out.split("[FAIL] decopy-dead/DeepSeek-V3", 1)[1].splitlines()[1]
    assert "breaker: closed" in section and "last failure: create-job: ConnectionError" in section


# --- the admin API -----------------------------------------------------------------------------


def test_admin_api_validates_and_hides_secrets(env: Env, tag: str) -> None:
    with env.http() as admin:
        listing = admin.get("/admin/upstreams")
        assert listing.status_code == 200
        names = {u["name"]: u for u in listing.json()["data"]}
        assert names["decopy"]["builtin"] is True and names["local"]["api_key_env"] == "LOCAL_SIM_KEY"
        assert SECRET not in listing.text
        # a route pointing nowhere
        bad = admin.post("/admin/routes", json={"id": f"r-{tag}", "targets": [{"upstream": "nope", "model": "m"}]})
        assert_openai_error(bad, 400, "invalid_routing")
        # an upstream still used by a route cannot go
        assert_openai_error(admin.delete("/admin/upstreams/local"), 400, "invalid_routing")
        assert_openai_error(admin.delete("/admin/upstreams/decopy"), 400, "builtin_upstream")
        # a key's value where its variable's name belongs
        bad = admin.post(
            "/admin/upstreams",
            json={"name": f"u-{tag}", "kind": "openai", "base_url": env.oai_url, "api_key_env": "sk-abc-123"},
        )
        assert_openai_error(bad, 400, "invalid_routing")
        for body in (
            {"name": f"u-{tag}", "kind": "grpc", "base_url": env.oai_url},
            {"name": f"u-{tag}", "kind": "openai", "base_url": "ftp://x"},
            {"name": f"u-{tag}", "kind": "openai", "base_url": env.oai_url, "headers": {"Authorization": "x"}},
            {"name": "bad name!", "kind": "openai", "base_url": env.oai_url},
        ):
            assert_openai_error(admin.post("/admin/upstreams", json=body), 400)
        assert_openai_error(admin.post("/admin/routes", json={"id": f"r-{tag}", "targets": []}), 400, "invalid_routing")
        assert_openai_error(
            admin.put("/admin/routes/nope-" + tag, json={"targets": [{"upstream": "local", "model": "x"}]}), 404
        )
        # a full round: create, replace, delete
        made = admin.post("/admin/upstreams", json={"name": f"u-{tag}", "kind": "openai", "base_url": env.oai_url})
        assert made.status_code == 201, made.text
        v1 = made.json()["version"]
        route = admin.post(
            "/admin/routes", json={"id": f"r-{tag}", "targets": [{"upstream": f"u-{tag}", "model": "m1"}]}
        )
        assert route.status_code == 201 and route.json()["version"] == v1 + 1
        assert_openai_error(
            admin.post("/admin/routes", json={"id": f"r-{tag}", "targets": [{"upstream": "local", "model": "x"}]}), 400
        )
        put = admin.put(f"/admin/routes/r-{tag}", json={"targets": [{"upstream": "local", "model": "m2"}]})
        assert put.status_code == 200 and put.json()["targets"] == [{"upstream": "local", "model": "m2"}]
        assert admin.delete(f"/admin/upstreams/u-{tag}").status_code == 200  # no route uses it now
        assert admin.delete(f"/admin/routes/r-{tag}").json()["deleted"] is True
        assert_openai_error(admin.delete(f"/admin/routes/r-{tag}"), 404)
        assert_openai_error(admin.delete("/admin/routes/decopy-deepseek-v3"), 400)
    # master key only
    with env.http(key=None) as anon:
        assert anon.get("/admin/routes").status_code == 401
    with env.http() as admin:
        team = admin.post("/admin/keys", json={"name": "team"}).json()["key"]
    with env.http(key=team) as member:
        assert member.get("/admin/upstreams").status_code == 401
        assert member.post("/admin/routes", json={"id": "x", "targets": []}).status_code == 401


# --- the circuit breaker -----------------------------------------------------------------------


def _breaker(env: Env, target: str) -> dict[str, Any]:
    with env.http() as admin:
        data = admin.get("/admin/upstreams").json()["data"]
    (found,) = [t for u in data for t in u["targets"] if t["target"] == target]
    return dict(found)


@pytest.fixture(scope="module")
def breaker_env() -> Iterator[Env]:
    e = Env({"BREAKER_FAILURES": "2", "BREAKER_COOLDOWN": "2"}, workers=2)
    yield e
    e.stop()


def test_breaker_opens_skips_and_closes(breaker_env: Env, tag: str) -> None:
    """BREAKER_FAILURES=2, BREAKER_COOLDOWN=2 s: two failures of local/first open it; requests then
    skip it (never sent there); after the cool-down one request tries it and closes it."""
    env = breaker_env
    with env.http() as http:
        for i in range(2):
            resp = chat(http, "pair", f"{tag}-{i} {oai(fail='500', only='first')}")
            assert resp.status_code == 200 and resp.headers["x-gateway-upstream"] == "local/second"
        state = _breaker(env, "local/first")
        assert state["state"] == "open" and "HTTP 500" in state["last_failure"]

        def metric_open() -> bool:
            lines = http.get("/metrics").text.splitlines()
            return any(
                ln.startswith("decopy_upstream_breaker_state{") and 'target="local/first"' in ln and ln.endswith(" 2.0")
                for ln in lines
            )

        wait_until(metric_open, 10, "the breaker's metric says open")
        resp = chat(http, "pair", f"{tag}-skip {oai(fail='500', only='first')}")
        assert resp.headers["x-gateway-upstream"] == "local/second"
        assert [e["model"] for e in env.oai_log(f"{tag}-skip")] == ["second"]  # not even tried
        # after the cool-down the first request probes it; it answers, the breaker closes

        def probe() -> bool:
            r = chat(http, "pair", f"{tag}-probe")
            return r.headers["x-gateway-upstream"] == "local/first"

        wait_until(probe, 10, "the probe served by local/first")
        assert _breaker(env, "local/first")["state"] == "closed"


# --- live configuration across replicas --------------------------------------------------------


def test_route_change_reaches_two_replicas_and_two_workers(tag: str) -> None:
    e = Env(apis=2, workers=2)
    try:
        with e.http(0) as admin:
            resp = admin.put(
                "/admin/routes/decopy-gpt-4o-mini", json={"targets": [{"upstream": "local", "model": "mini-local"}]}
            )
            assert resp.status_code == 200, resp.text
            version = resp.json()["version"]
        for replica in (0, 1):
            with e.http(replica) as http:
                wait_until(
                    lambda: http.get("/v1/models/decopy-gpt-4o-mini").json()["targets"] == ["local/mini-local"],
                    3,
                    f"replica {replica} sees the route",
                )
        for w in e.workers:
            wait_until(lambda: f"routing configuration version {version}:" in w.log(), 3, "a worker loads it")
        with ThreadPool() as pool:
            served = pool(lambda i: _served(e, i % 2, "decopy-gpt-4o-mini", f"{tag}-{i}"), 8)
        assert served == ["local/mini-local"] * 8
        assert not e.sim_log(tag)
        with e.http(1) as admin:  # back to decopy, from the other replica
            assert admin.delete("/admin/routes/decopy-gpt-4o-mini").status_code == 200
        with e.http(0) as http:
            wait_until(lambda: _served(e, 0, "decopy-gpt-4o-mini", f"{tag}-back") == "decopy/GPT-4o-mini", 3, "back")
    finally:
        e.stop()


def _served(e: Env, replica: int, model: str, text: str) -> str:
    with e.http(replica) as http:
        resp = chat(http, model, text)
    assert resp.status_code == 200, resp.text
    return str(resp.headers["x-gateway-upstream"])


class ThreadPool:
    def __enter__(self) -> Callable[[Callable[[int], str], int], list[str]]:
        from concurrent.futures import ThreadPoolExecutor

        self.ex = ThreadPoolExecutor(8)
        return lambda fn, n: list(self.ex.map(fn, range(n)))

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown()


def test_admin_routes_lists_the_seeded_and_default_routes(env: Env) -> None:
    """The environment seeded Redis (version 1 on): the stored routes beside the defaults."""
    with env.http() as admin:
        before = admin.get("/admin/routes").json()
    assert before["version"] >= 1
    ids = {r["id"] for r in before["data"]}
    assert {"smart", "local-model", "pair", "decopy-deepseek-v3"} <= ids
