"""Fixtures: a private Redis, the decopy simulator, the API and workers, all as real processes.

``gateway`` is one stack shared by the whole session (default settings). ``make_gateway`` builds
a private stack with other settings for a test that needs them (small timeouts, a master key)
and stops it afterwards.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from devtools.procs import Proc, Stack, wait_workers


@dataclass
class Gateway:
    stack: Stack
    base_url: str
    sim_url: str
    redis_url: str
    env: dict[str, str]
    api_proc: Proc
    workers: list[Proc] = field(default_factory=list)
    api_key: str = "sk-test-anything"
    _clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def client(self, api_key: str | None = None) -> openai.OpenAI:
        """A sync SDK client (one per key, closed with the gateway)."""
        key = api_key or self.api_key
        if key not in self._clients:
            self._clients[key] = openai.OpenAI(base_url=self.v1, api_key=key, max_retries=0, timeout=30)
        return self._clients[key]

    def aclient(self, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("api_key", self.api_key)
        return openai.AsyncOpenAI(base_url=self.v1, max_retries=0, timeout=30, **kw)

    def http(self, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers, **kw)

    def sim_log(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.sim_url + "/_sim/log", timeout=5).json())

    def sim_entries(self, needle: str) -> list[dict[str, Any]]:
        """Simulator log entries whose prompt contains ``needle`` (tests tag prompts with a unique id)."""
        return [e for e in self.sim_log() if needle in (e.get("entertext") or "")]

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self.stack.stop()

    def add_worker(self) -> Proc:
        proc = self.stack.worker(self.env)
        self.workers.append(proc)
        return proc

    def wait_workers_ready(self, timeout: float = 15) -> None:
        wait_workers(self.redis_url, sum(w.alive() for w in self.workers), timeout)


def _redis_and_simulator(stack: Stack, env: dict[str, str] | None) -> tuple[str, str, dict[str, str]]:
    """Start a private Redis and the simulator; the environment the gateway's processes get."""
    _, redis_url = stack.redis()
    _, sim_url = stack.simulator()
    full_env = {
        "REDIS_URL": redis_url,
        "DECOPY_BASE_URL": sim_url,
        "LOG_LEVEL": "INFO",
        "UPSTREAM_BACKOFF_BASE": "0.05",
        "UPSTREAM_BACKOFF_MAX": "0.2",
        **(env or {}),
    }
    return redis_url, sim_url, full_env


def start_gateway(env: dict[str, str] | None = None, *, workers: int = 2) -> Gateway:
    stack = Stack()
    try:
        redis_url, sim_url, full_env = _redis_and_simulator(stack, env)
        gw = Gateway(stack, "", sim_url, redis_url, full_env, api_proc=None)  # type: ignore[arg-type]
        for _ in range(workers):
            gw.add_worker()
        gw.api_proc, gw.base_url = stack.api(full_env)
        if workers:
            gw.wait_workers_ready()
        return gw
    except BaseException:
        stack.stop()
        raise


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    gw = start_gateway()
    yield gw
    gw.stop()


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(env: dict[str, str] | None = None, *, workers: int = 2) -> Gateway:
        gw = start_gateway(env, workers=workers)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()


@pytest.fixture
def tag() -> str:
    """A unique marker to put in a prompt, to find this test's requests in the simulator's log."""
    return "t" + uuid.uuid4().hex[:12]


def directive(**fields: Any) -> str:
    """The simulator directive line (see tests/decopy_sim.py)."""
    import json

    return "@@sim@@ " + json.dumps(fields)


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``resp`` has ``status`` and OpenAI's error envelope (with ``code``, when given); returns the error."""
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return dict(err)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- OpenAI compatibility: fixtures ---

COMPAT_KEY = "sk-compat-master"
COMPAT_ALIASES = {"gpt-4o": "decopy-deepseek-v3", "deepseek-reasoner": "decopy-deepseek-r1"}
#: The compatibility tests' image server listens here (see tests/test_images.py); the gateway
#: below exempts exactly this address from its SSRF address check.
IMAGE_HOST = "127.0.0.2"


@pytest.fixture(scope="session")
def compat_gateway() -> Iterator[Gateway]:
    """A stack with a master key, model aliases, and image fetching allowed from 127.0.0.2 only."""
    import json

    gw = start_gateway(
        {
            "API_MASTER_KEY": COMPAT_KEY,
            "MODEL_ALIASES": json.dumps(COMPAT_ALIASES),
            "IMAGE_FETCH_ALLOW_NETWORKS": f"{IMAGE_HOST}/32",
            "IMAGE_FETCH_TIMEOUT": "2",
            "IMAGE_MAX_BYTES": "100000",
        },
        workers=1,
    )
    gw.api_key = COMPAT_KEY
    yield gw
    gw.stop()


# --- per-key limits: several API replicas and workers on one Redis ---


@dataclass
class Cluster:
    """Several API processes and worker processes sharing one Redis and one simulator."""

    stack: Stack
    redis_url: str
    sim_url: str
    env: dict[str, str]
    apis: list[Proc] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    master_key: str | None = None
    _clients: list[openai.OpenAI] = field(default_factory=list)

    def v1(self, replica: int) -> str:
        return self.bases[replica] + "/v1"

    def client(self, replica: int, api_key: str) -> openai.OpenAI:
        """A sync SDK client of one replica (closed with the cluster)."""
        client = openai.OpenAI(base_url=self.v1(replica), api_key=api_key, max_retries=0, timeout=30)
        self._clients.append(client)
        return client

    def http(self, replica: int, api_key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.bases[replica], timeout=30, headers=headers, **kw)

    def admin(self, replica: int = 0) -> httpx.Client:
        """An HTTP client of one replica carrying the master key."""
        return self.http(replica, self.master_key)

    def sim_log(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.sim_url + "/_sim/log", timeout=5).json())

    def logs(self) -> str:
        """Everything the API and worker processes have logged so far."""
        return "\n".join(p.log() for p in self.apis + self.workers)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.stack.stop()


def start_cluster(env: dict[str, str] | None = None, *, apis: int = 2, workers: int = 3) -> Cluster:
    """A Redis, the simulator, ``workers`` worker processes and ``apis`` API processes."""
    stack = Stack()
    try:
        redis_url, sim_url, full_env = _redis_and_simulator(stack, env)
        cluster = Cluster(stack, redis_url, sim_url, full_env, master_key=full_env.get("API_MASTER_KEY"))
        cluster.workers = [stack.worker(full_env) for _ in range(workers)]
        for _ in range(apis):
            proc, base = stack.api(full_env)
            cluster.apis.append(proc)
            cluster.bases.append(base)
        if workers:
            wait_workers(redis_url, workers)
        return cluster
    except BaseException:
        stack.stop()
        raise


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    """Factory of private clusters (stopped after the test)."""
    made: list[Cluster] = []

    def make(env: dict[str, str] | None = None, *, apis: int = 2, workers: int = 3) -> Cluster:
        cluster = start_cluster(env, apis=apis, workers=workers)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


# --- the other dialects: one stack for the Responses, Messages and Completions front doors ---

DIALECTS_KEY = "sk-dialects-master"
#: Claude Code and the Anthropic SDKs send ``claude-…`` ids; one pattern takes them all, and the
#: exact alias below wins over it (a reasoning model, for the thinking blocks).
DIALECTS_ALIASES = {"claude-*": "decopy-deepseek-v3", "claude-thinks": "decopy-deepseek-r1"}
CORS_ORIGIN = "http://chat.example.test"


@pytest.fixture(scope="session")
def dialects_gateway() -> Iterator[Gateway]:
    """A stack with a master key (team keys are made through the admin API), glob aliases and CORS."""
    import json

    gw = start_gateway(
        {
            "API_MASTER_KEY": DIALECTS_KEY,
            "MODEL_ALIASES": json.dumps(DIALECTS_ALIASES),
            "CORS_ALLOW_ORIGINS": CORS_ORIGIN,
        },
        workers=2,
    )
    gw.api_key = DIALECTS_KEY
    yield gw
    gw.stop()


def team_key(gw: Gateway, **limits: int) -> tuple[str, str]:
    """A new team key on ``gw`` (made with its master key): ``(id, secret)``."""
    with gw.http() as http:
        resp = http.post("/admin/keys", json={"name": "t" + uuid.uuid4().hex[:8], **limits})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body["id"], body["key"]
