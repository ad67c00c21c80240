"""Start and stop the gateway's processes (each a real OS process) for development, tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Stack:
    """A set of processes started together and stopped together (in reverse order)."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="decopy-gw-")))
    procs: list[Proc] = field(default_factory=list)
    #: Keep the logs when stopping (``make run`` does: a newcomer reads them after Ctrl-C).
    keep_logs: bool = False

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT, start_new_session=True
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def redis(self, port: int | None = None) -> tuple[Proc, str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run `make redis-server` (Debian: apt-get install redis-server)")
        port = port or free_port()
        proc = self.spawn(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: _redis_ping(port), 10, "redis", proc.popen)
        return proc, url

    def simulator(self, *, demo: bool = False) -> tuple[Proc, str]:
        """Start the decopy simulator; ``demo``: it answers like a model (``tests/sim_persona.py``)."""
        argv = [sys.executable, "-m", "tests.decopy_sim", "--host", "127.0.0.1", "--port", "0"]
        proc = self.spawn("sim", argv + (["--demo"] if demo else []))
        url = ""

        def ready() -> bool:
            nonlocal url
            for line in proc.log().splitlines():
                if line.startswith("SIM_READY "):
                    url = line.split(" ", 1)[1].strip()
                    return True
            return False

        wait_for(ready, 15, "simulator", proc.popen)
        return proc, url

    def api(self, env: Mapping[str, str], port: int | None = None) -> tuple[Proc, str]:
        port = port or free_port()
        proc = self.spawn("api", [sys.executable, "-m", "api"], {**env, "API_HOST": "127.0.0.1", "API_PORT": str(port)})
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(base + "/healthz"), 20, "api", proc.popen)
        return proc, base

    def worker(self, env: Mapping[str, str]) -> Proc:
        return self.spawn("worker", [sys.executable, "-m", "worker"], env)

    def stop(self) -> None:
        """Stop every process (newest first) and remove the logs, unless kept (``keep_logs``, ``DECOPY_KEEP_LOGS``)."""
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if not self.keep_logs and not os.environ.get("DECOPY_KEEP_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def wait_workers(redis_url: str, count: int, timeout: float = 20) -> None:
    """Wait until ``count`` worker processes have written their health key (they are polling)."""
    import redis

    from shared import names

    r = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: len(list(r.scan_iter(names.WORKER_HEALTH_PREFIX + "*"))) >= count, timeout, "workers")
    finally:
        r.close()


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
