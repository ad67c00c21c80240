"""Helpers shared by the tests/test_reliability_*.py files: private gateways, Redis, raw SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
from openai.types.chat import ChatCompletionMessageParam

from devtools.procs import Proc
from shared import names
from tests.conftest import Gateway, directive, start_gateway, wait_until

MODEL = "decopy-deepseek-v3"
IN_PROGRESS = "arq:in-progress:"


@contextmanager
def private_gateway(env: dict[str, str] | None = None, *, workers: int = 1) -> Iterator[Gateway]:
    """A gateway of its own (for module-scoped fixtures; ``make_gateway`` is per test)."""
    gw = start_gateway(env, workers=workers)
    try:
        yield gw
    finally:
        gw.stop()


@contextmanager
def redis_of(gw: Gateway) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(gw.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield r
    finally:
        r.close()


def queued_ids(r: redis.Redis) -> list[str]:
    return [m.decode() for m in cast(list[bytes], r.zrange(names.QUEUE, 0, -1))]


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def body(text: str, *, stream: bool = True) -> dict[str, Any]:
    return {"model": MODEL, "stream": stream, "messages": user(text)}


def prompt(tag: str, **fields: Any) -> str:
    return f"{tag} " + directive(**fields) if fields else tag


def creates(gw: Gateway, needle: str) -> list[dict[str, Any]]:
    return [e for e in gw.sim_entries(needle) if e["kind"] == "create"]


def streams(gw: Gateway, needle: str) -> list[dict[str, Any]]:
    return [e for e in gw.sim_entries(needle) if e["kind"] == "stream"]


def ended_stream(gw: Gateway, needle: str, timeout: float = 15) -> dict[str, Any]:
    """The simulator's entry of the (single) get-job call for ``needle``, once it ended."""

    def done() -> dict[str, Any] | None:
        found = [e for e in streams(gw, needle) if e["ended"] is not None]
        return found[0] if found else None

    return wait_until(done, timeout, f"upstream stream of {needle} ended")  # type: ignore[no-any-return]


def sse_data(lines: list[str]) -> list[Any]:
    """The payloads of the ``data:`` lines (``[DONE]`` kept as a string)."""
    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def text_of(events: list[Any]) -> str:
    return "".join(
        (e["choices"][0]["delta"].get("content") or "") for e in events if isinstance(e, dict) and e.get("choices")
    )


def worker_running(gw: Gateway, job_id: str, timeout: float = 10) -> Proc:
    """The worker process whose log says it took ``job_id``."""

    def find() -> Proc | None:
        for w in gw.workers:
            if f"job {job_id} request=" in w.log():
                return w
        return None

    return wait_until(find, timeout, f"a worker took {job_id}")  # type: ignore[no-any-return]


def wait_exit(proc: Proc, timeout: float) -> int:
    proc.popen.wait(timeout)
    code = proc.popen.returncode
    assert code is not None
    return code


def elapsed_since(t0: float) -> float:
    return time.monotonic() - t0
