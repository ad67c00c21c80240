"""Redis with Sentinel: the gateway finds the primary through three sentinels and follows a failover.

Real processes throughout: Debian's redis-server as a primary, a replica and three sentinels
(``redis-server --sentinel``) on free loopback ports, the simulator, an API and two workers that
know Redis only through ``REDIS_SENTINELS`` (their ``REDIS_URL`` names a port where nothing
listens). The primary is killed with SIGKILL while streams are in flight.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from devtools.procs import ROOT, Proc, Stack, free_port, http_ok, wait_for, wait_workers
from shared import names
from tests.conftest import directive

MASTER = "sk-master-sentinel-test"
MODEL = "decopy-deepseek-v3"
SERVICE = "gwprimary"
#: Sentinel's failure detection: the primary is judged down after this much silence.
DOWN_AFTER_MS = 1000
#: New requests must succeed again within the failover time plus a few seconds.
RECOVERY_BOUND_S = DOWN_AFTER_MS / 1000 + 15


@dataclass
class HA:
    stack: Stack
    primary: Proc
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    base_url: str
    sim_url: str
    env: dict[str, str]
    workers: list[Proc]

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)

    def current_primary_port(self) -> int:
        with self.sentinel() as s:
            _, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)


def _ping(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=1) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def _redis(stack: Stack, port: int, *extra: str) -> Proc:
    proc = stack.spawn(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(stack.workdir), *extra],
    )  # fmt: skip
    wait_for(lambda: _ping(port), 10, "redis", proc.popen)
    return proc


def _sentinel(stack: Stack, port: int, primary_port: int) -> Proc:
    conf = stack.workdir / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {stack.workdir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    proc = stack.spawn("sentinel", ["redis-server", str(conf), "--sentinel"])
    wait_for(lambda: _ping(port), 10, "sentinel", proc.popen)
    return proc


@pytest.fixture
def ha() -> Iterator[HA]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: run `make redis-server` (Debian: apt-get install redis-server)")
    stack = Stack()
    try:
        primary_port, replica_port = free_port(), free_port()
        primary = _redis(stack, primary_port)
        _redis(stack, replica_port, "--replicaof", "127.0.0.1", str(primary_port))
        sentinel_ports = [free_port() for _ in range(3)]
        for port in sentinel_ports:
            _sentinel(stack, port, primary_port)

        def sentinels_ready() -> bool:
            for port in sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1) as s:
                    replicas = s.execute_command("SENTINEL", "REPLICAS", SERVICE)
                    peers = s.execute_command("SENTINEL", "SENTINELS", SERVICE)
                if len(replicas) != 1 or len(peers) != 2:
                    return False
            with redis.Redis(port=replica_port, socket_timeout=1) as r:
                return bool(r.info("replication").get("master_link_status") == "up")

        wait_for(sentinels_ready, 30, "sentinels to know the replica and each other")
        _, sim_url = stack.simulator()
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing there: only the sentinels lead to Redis
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in sentinel_ports),
            "REDIS_SENTINEL_MASTER": SERVICE,
            "DECOPY_BASE_URL": sim_url,
            "API_MASTER_KEY": MASTER,
            "UPSTREAM_BACKOFF_BASE": "0.05",
            "UPSTREAM_BACKOFF_MAX": "0.2",
            "WORKER_POLL_DELAY": "0.2",
        }
        workers = [stack.worker(env) for _ in range(2)]
        wait_workers(f"redis://127.0.0.1:{primary_port}/0", 2)
        api, base = stack.api(env)
        wait_for(lambda: http_ok(base + "/readyz"), 30, "api", api.popen)
        yield HA(stack, primary, primary_port, replica_port, sentinel_ports, base, sim_url, env, workers)
    finally:
        stack.stop()


def _chat(base: str, key: str, content: str, *, timeout: float = 10) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    return httpx.post(
        base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


def _stream(base: str, key: str, content: str, started: threading.Event) -> dict[str, Any]:
    """Stream one answer; what it got and how it ended."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    events: list[str] = []
    with httpx.stream(
        "POST",
        base + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(10, read=60),
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()
    return {"status": resp.status_code, "events": events, "ended": time.monotonic()}


def _run(ha: HA, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ha.env}
    return subprocess.run([sys.executable, "-m", *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_failover_is_followed_without_a_restart(ha: HA, tag: str) -> None:
    admin = httpx.Client(base_url=ha.base_url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=10)
    team = admin.post("/admin/keys", json={"name": "team"}).json()
    limited = admin.post("/admin/keys", json={"name": "three-a-minute", "rpm": 3}).json()
    assert _chat(ha.base_url, team["key"], f"{tag} before").status_code == 200
    assert _chat(ha.base_url, limited["key"], f"{tag} limited before").status_code == 200
    with redis.Redis(port=ha.primary_port) as primary:
        assert primary.execute_command("WAIT", 1, 5000) == 1  # the replica has all of it

    # Three streams in flight, each a slow answer, when the primary dies.
    slow = directive(reply=["piece "] * 60, interval_ms=200)
    started = [threading.Event() for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        streams = [
            pool.submit(_stream, ha.base_url, team["key"], f"{tag} stream {i}\n{slow}", started[i]) for i in range(3)
        ]
        for event in started:
            assert event.wait(15), "a stream never started"
        ha.primary.popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        ended = [f.result(timeout=60) for f in streams]  # never hangs: each ends, by itself
    for result in ended:
        assert result["status"] == 200
        assert result["events"][-1] != "[DONE]" and '"error"' in result["events"][-1], result["events"][-3:]
        assert result["ended"] - killed < 30

    # New requests succeed again once the sentinels have promoted the replica.
    recovered = None
    while time.monotonic() - killed < RECOVERY_BOUND_S + 10:
        try:
            if _chat(ha.base_url, team["key"], f"{tag} after", timeout=5).status_code == 200:
                recovered = time.monotonic()
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    assert recovered is not None, "no request succeeded after the failover"
    cost = recovered - killed
    print(f"\nfailover: first successful request {cost:.2f} s after SIGKILL of the primary")
    assert cost < RECOVERY_BOUND_S
    assert ha.current_primary_port() == ha.replica_port

    # Keys and limits from before the failover still hold: one of three already used.
    statuses = [_chat(ha.base_url, limited["key"], f"{tag} limited {i}").status_code for i in range(3)]
    assert statuses == [200, 200, 429], statuses
    streamed = _stream(ha.base_url, team["key"], f"{tag} streamed after", threading.Event())
    assert streamed["events"][-1] == "[DONE]"
    assert admin.get("/admin/keys").status_code == 200
    # The workers followed too (a job needs a worker to claim it and publish its answer): shown
    # above. So do the CLI, the doctor and the workers' health check, started after the failover.
    cli = _run(ha, "api", "keys", "list", "--json")
    assert team["id"] in cli.stdout, cli.stdout + cli.stderr
    doctor = _run(ha, "worker", "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout[-2000:] + doctor.stderr[-2000:]
    with redis.Redis(port=ha.replica_port) as new_primary:
        assert new_primary.get(names.DOCTOR_LAST) is not None
    health = _run(ha, "worker", "health", *(a for w in ha.workers for a in ("--pid", str(w.pid))))
    assert health.returncode == 0, health.stdout + health.stderr
    # No job ran twice: every prompt reached the upstream at most once.
    creates = [e for e in httpx.get(ha.sim_url + "/_sim/log", timeout=5).json() if e["kind"] == "create"]
    prompts = [e["entertext"] for e in creates if tag in (e.get("entertext") or "")]
    assert len(prompts) == len(set(prompts)), [p for p in prompts if prompts.count(p) > 1]
    admin.close()
