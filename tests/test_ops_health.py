"""/healthz, /readyz and the probes the images and Kubernetes run.

Real processes and real signals: readiness follows workers coming and going (SIGKILL) and
Redis dying; ``python -m worker health`` is run exactly as the exec probe runs it, against a
live worker and after that worker is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
from starlette.testclient import TestClient

from api.http.app import create_app
from devtools.procs import ROOT, Stack
from shared.settings import Settings
from tests.conftest import Gateway, wait_until
from worker.health import find_worker_pids, is_worker_cmdline


def _ready(gw: Gateway) -> httpx.Response:
    return httpx.get(gw.base_url + "/readyz", timeout=10)


def _code(resp: httpx.Response) -> str | None:
    return None if resp.status_code == 200 else resp.json()["error"]["code"]


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )


def test_readyz_follows_workers_and_redis(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"METRICS_INTERVAL": "0.5"}, workers=0)
    assert httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 200
    resp = _ready(gw)
    assert resp.status_code == 503 and _code(resp) == "no_workers", resp.text

    worker = gw.add_worker()
    wait_until(lambda: _ready(gw).status_code == 200, 20, "ready once a worker is up")
    assert _ready(gw).text == "ready"

    worker.signal(signal.SIGKILL)  # its health key expires within ~6 s
    wait_until(lambda: _code(_ready(gw)) == "no_workers", 20, "not ready once the only worker is dead")

    gw.add_worker()
    wait_until(lambda: _ready(gw).status_code == 200, 20, "ready again")
    redis_proc = gw.stack.procs[0]
    assert redis_proc.name == "redis"
    redis_proc.signal(signal.SIGKILL)
    wait_until(lambda: _code(_ready(gw)) == "redis_unavailable", 20, "not ready without Redis")
    # alive is not ready: the process itself still answers
    assert httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 200


def test_readyz_is_503_while_draining() -> None:
    stack = Stack()
    try:
        _, redis_url = stack.redis()
        worker = stack.worker({"REDIS_URL": redis_url, "METRICS_INTERVAL": "0.5"})
        app = create_app(Settings(redis_url=redis_url, metrics_interval=0.5))
        with TestClient(app) as client:
            wait_until(lambda: client.get("/readyz").status_code == 200, 20, "ready")
            app.state.draining = True  # what the shutdown code sets
            resp = client.get("/readyz")
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "draining"
            app.state.draining = False
            assert client.get("/readyz").status_code == 200
        assert worker.alive()
    finally:
        stack.stop()


def test_worker_health_probe_live_then_killed(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1)
    worker = gw.workers[0]
    env = {"REDIS_URL": gw.redis_url}
    probe = ["-m", "worker", "health", "--pid", str(worker.pid)]

    alive = _run(probe, env)
    assert alive.returncode == 0, alive.stderr
    assert f"worker {worker.pid}: alive" in alive.stdout

    worker.signal(signal.SIGKILL)
    dead = wait_until(lambda: (r := _run(probe, env)).returncode == 1 and r, 20, "the probe to fail")
    assert "DEAD" in dead.stderr

    # the probe cannot reach Redis: it does not judge the worker (restarts would not help)
    unreachable = _run(probe, {"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert unreachable.returncode == 0 and "cannot reach Redis" in unreachable.stdout


def test_worker_health_finds_worker_processes(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1)
    assert gw.workers[0].pid in find_worker_pids()
    assert is_worker_cmdline(["/usr/bin/python3", "-m", "worker"])
    assert not is_worker_cmdline(["python", "-m", "worker", "health"])
    assert not is_worker_cmdline(["python", "-m", "api"])


def test_api_health_command(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=0)
    port = gw.base_url.rsplit(":", 1)[1]
    ok = _run(["-m", "api", "health"], {"API_PORT": port, "API_HOST": "127.0.0.1"})
    assert ok.returncode == 0, ok.stderr
    gw.api_proc.stop()
    down = _run(["-m", "api", "health"], {"API_PORT": port, "API_HOST": "127.0.0.1"})
    assert down.returncode == 1 and "unhealthy" in down.stderr
