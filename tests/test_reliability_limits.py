"""Time limits, backpressure, keep-alive pings, and Redis going away (killed, then
hung) and coming back on the same port, all with real processes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import httpx
import openai
import pytest

from devtools.procs import Proc
from tests.conftest import Gateway, assert_openai_error, wait_until
from tests.reliability_support import (
    MODEL,
    body,
    creates,
    ended_stream,
    private_gateway,
    prompt,
    queued_ids,
    redis_of,
    sse_data,
    text_of,
    user,
)

pytestmark = pytest.mark.slow


# --- Waiting in the queue, and a full queue ---------------------------------------------------


@pytest.fixture(scope="module")
def no_workers() -> Iterator[Gateway]:
    with private_gateway({"QUEUE_TIMEOUT": "3", "MAX_QUEUE": "2"}, workers=0) as gw:
        yield gw


def _post_in_thread(gw: Gateway, payload: dict[str, object], out: list[httpx.Response]) -> threading.Thread:
    def run() -> None:
        with httpx.Client(base_url=gw.base_url, timeout=30) as http:
            out.append(http.post("/v1/chat/completions", json=payload))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_queue_timeout_is_503_with_retry_after_and_the_job_is_removed(no_workers: Gateway, tag: str) -> None:
    gw = no_workers
    got: list[httpx.Response] = []
    threads = [_post_in_thread(gw, body(prompt(f"{tag}-{s}"), stream=s), got) for s in (True, False)]
    with redis_of(gw) as r:
        wait_until(lambda: len(queued_ids(r)) == 2, 5, "both queued")
        for t in threads:
            t.join(15)
        for resp in got:  # the stream too: its response is held while the job is queued
            err = assert_openai_error(resp, 503, "queue_timeout")
            assert "No worker took the request within 3 s" in err["message"]
            assert resp.headers["retry-after"] == "5"
        assert queued_ids(r) == [] and r.keys("arq:job:*") == []


def test_full_queue_is_refused_at_once_with_retry_after(no_workers: Gateway, tag: str) -> None:
    gw = no_workers
    got: list[httpx.Response] = []
    waiting = [_post_in_thread(gw, body(prompt(f"{tag}-{i}")), got) for i in range(2)]
    with redis_of(gw) as r:
        wait_until(lambda: len(queued_ids(r)) == 2, 5, "queue full")
        with pytest.raises(openai.InternalServerError) as exc:
            gw.client().chat.completions.create(model=MODEL, stream=True, messages=user(f"{tag}-third"))
        assert all(t.is_alive() for t in waiting), "refused only after the others gave up"
        assert exc.value.status_code == 503 and exc.value.body["code"] == "queue_full"  # type: ignore[index]
        assert exc.value.response.headers["retry-after"] == "2"
        assert len(queued_ids(r)) == 2  # the refused request left nothing behind
        for t in waiting:
            t.join(15)
        assert [resp.status_code for resp in got] == [503, 503]
        assert queued_ids(r) == []


# --- Time limits with a worker, pings and headers ----------------------------------------------


@pytest.fixture(scope="module")
def limits() -> Iterator[Gateway]:
    env = {
        "FIRST_TOKEN_TIMEOUT": "5",
        "TOTAL_TIMEOUT": "6",
        "PING_INTERVAL": "1",
        "IDLE_TIMEOUT": "3",
        "WORKER_HEARTBEAT": "1",
    }
    with private_gateway(env, workers=1) as gw:
        yield gw


def test_pings_while_waiting_and_proxy_headers(limits: Gateway, tag: str) -> None:
    lines: list[str] = []
    with (
        httpx.Client(base_url=limits.base_url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body(prompt(tag, reply=["late"], first_ms=4000))) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-accel-buffering"] == "no"
        assert resp.headers["cache-control"] == "no-cache"
        lines = list(resp.iter_lines())
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    pings = [line for line in lines[:first_data] if line.startswith(":")]
    assert len(pings) >= 2, lines  # a comment every PING_INTERVAL (1 s) while the text is 4 s away
    events = sse_data(lines)
    assert text_of(events) == "late" and events[-1] == "[DONE]"


def test_first_token_timeout(limits: Gateway, tag: str) -> None:
    got: list[httpx.Response] = []
    whole = _post_in_thread(limits, body(prompt(f"{tag}-whole", first_ms=20_000), stream=False), got)
    stream = limits.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(f"{tag}-stream", first_ms=20_000))
    )
    with pytest.raises(openai.APIError) as exc:  # the stream had started (pings): an error event
        for _ in stream:
            pass
    assert exc.value.code == "first_token_timeout" and "no text within 5 s" in exc.value.message
    whole.join(15)
    assert_openai_error(got[0], 504, "first_token_timeout")  # nothing sent yet: a real status
    for needle in (f"{tag}-whole", f"{tag}-stream"):
        assert ended_stream(limits, needle)["client_closed"] is True  # the job was aborted upstream


def test_total_timeout(limits: Gateway, tag: str) -> None:
    stream = limits.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=200, interval_ms=50))
    )  # ~10 s > 6 s
    text = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert exc.value.code == "total_timeout"
    assert text.startswith("tok0 tok1 ") and "tok199" not in text
    assert ended_stream(limits, tag)["client_closed"] is True


# --- Redis goes away ----------------------------------------------------------------------------


def _redis_proc(gw: Gateway) -> Proc:
    return [p for p in gw.stack.procs if p.name == "redis" and p.alive()][-1]


def _prompt_503(gw: Gateway) -> None:
    """A request while Redis is away gets its 503 rather than hanging: it must come before the
    client gives up (10 s, well past REDIS_TIMEOUT=1; a request that waited on Redis would hang)."""
    with httpx.Client(base_url=gw.base_url, timeout=10) as http:
        resp = http.post("/v1/chat/completions", json=body("while Redis is away"))
    assert_openai_error(resp, 503)
    assert resp.json()["error"]["code"] == "redis_unavailable"
    assert resp.headers["retry-after"] == "2"


def _recovered(gw: Gateway, tag: str) -> None:
    def ok() -> bool:
        try:
            resp = gw.client().chat.completions.create(model=MODEL, messages=user(prompt(tag, reply=["back"])))
        except openai.APIStatusError:
            return False
        return resp.choices[0].message.content == "back"

    wait_until(ok, 30, "a request succeeds again")
    stream = gw.client().chat.completions.create(model=MODEL, stream=True, messages=user(prompt(tag, reply=["a", "b"])))
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ab"


def test_redis_killed_then_restarted(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"REDIS_TIMEOUT": "1"}, workers=2)
    pids = [gw.api_proc.pid, *(w.pid for w in gw.workers)]
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(f"{tag}-inflight", n=400, interval_ms=50))
    )
    chunks = iter(stream)
    next(chunks)
    port = urlparse(gw.redis_url).port
    _redis_proc(gw).signal(signal.SIGKILL)

    with pytest.raises(openai.APIError) as exc:  # the stream in flight ends with an error event
        for _ in chunks:
            pass
    assert exc.value.code == "redis_unavailable"
    _prompt_503(gw)
    with httpx.Client(base_url=gw.base_url, timeout=10) as http:
        assert_openai_error(http.get("/readyz"), 503, "redis_unavailable")
        assert http.get("/v1/models").status_code == 200  # what needs no Redis still works
    assert ended_stream(gw, f"{tag}-inflight")["client_closed"] is True  # the worker let go upstream
    time.sleep(2)
    assert all(w.alive() for w in gw.workers) and gw.api_proc.alive()
    assert all("queue poll failed" in w.log() for w in gw.workers), "workers keep retrying"

    gw.stack.redis(port)  # the same address, empty (no persistence)
    _recovered(gw, tag)
    assert [gw.api_proc.pid, *(w.pid for w in gw.workers)] == pids and all(w.alive() for w in gw.workers)


def test_redis_hung_then_resumed(make_gateway: Callable[..., Gateway], tag: str) -> None:
    """A Redis that accepts connections but answers nothing (SIGSTOP): the socket timeouts."""
    gw = make_gateway({"REDIS_TIMEOUT": "1", "IDLE_TIMEOUT": "3", "WORKER_HEARTBEAT": "1"}, workers=1)
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(f"{tag}-inflight", n=400, interval_ms=50))
    )
    chunks = iter(stream)
    next(chunks)
    redis_proc = _redis_proc(gw)
    os.kill(redis_proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(openai.APIError) as exc:
            for _ in chunks:
                pass
        assert exc.value.code == "idle_timeout"
        _prompt_503(gw)
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
    _recovered(gw, tag)
    assert ended_stream(gw, f"{tag}-inflight")["client_closed"] is True
    assert len(creates(gw, f"{tag}-inflight")) == 1
