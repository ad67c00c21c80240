"""Graceful shutdown with real signals: the API drains (not ready, refuses new
requests, lets streams finish within API_DRAIN_SECONDS), a worker finishes its jobs and takes
no new ones; both exit 0, on SIGTERM and on SIGINT.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.conftest import Gateway, assert_openai_error, wait_until
from tests.reliability_support import (
    IN_PROGRESS,
    MODEL,
    body,
    creates,
    ended_stream,
    prompt,
    queued_ids,
    redis_of,
    user,
)

pytestmark = pytest.mark.slow

SIGNALS = [signal.SIGTERM, signal.SIGINT]
EXPECTED = "".join(f"tok{i} " for i in range(30))


def _text(chunks: Iterable[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_api_drains_then_exits_0(make_gateway: Callable[..., Gateway], tag: str, sig: int) -> None:
    gw = make_gateway({"API_DRAIN_SECONDS": "30"}, workers=1)
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=30, interval_ms=100))
    )  # ~3 s
    chunks = iter(stream)
    head = [next(chunks)]
    gw.api_proc.signal(sig)
    with httpx.Client(base_url=gw.base_url, timeout=10) as http:
        ready = wait_until(lambda: (r := http.get("/readyz")).status_code == 503 and r, 5, "not ready")
        assert_openai_error(ready, 503, "draining")
        assert http.get("/healthz").status_code == 200  # alive, just not taking work
        refused = http.post("/v1/chat/completions", json=body(prompt(f"{tag}-late")))
        assert_openai_error(refused, 503, "draining")
        assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
    with pytest.raises(openai.InternalServerError) as exc:  # what the SDK makes of it
        gw.client().chat.completions.create(model=MODEL, messages=user(prompt(f"{tag}-late")))
    assert exc.value.status_code == 503

    assert _text(head) + _text(chunks) == EXPECTED  # the stream in flight finished, whole
    assert gw.api_proc.popen.wait(15) == 0
    assert "drained in" in gw.api_proc.log()
    assert creates(gw, f"{tag}-late") == []


def test_api_interrupts_what_outlives_the_grace_period(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"API_DRAIN_SECONDS": "1"}, workers=1)
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(f"{tag}-long", n=400, interval_ms=50))
    )  # ~20 s
    chunks = iter(stream)
    next(chunks)
    held: dict[str, httpx.Response] = {}

    def waiting_client() -> None:  # no text for 30 s: its response is still held (no status sent)
        with httpx.Client(base_url=gw.base_url, timeout=30) as http:
            held["resp"] = http.post("/v1/chat/completions", json=body(prompt(f"{tag}-slow", first_ms=30_000)))

    thread = threading.Thread(target=waiting_client)
    thread.start()
    wait_until(lambda: creates(gw, f"{tag}-slow"), 10, "second call upstream")
    gw.api_proc.signal(signal.SIGTERM)
    t_signal = time.time()
    with pytest.raises(openai.APIError) as exc:
        for _ in chunks:
            pass
    assert exc.value.code == "shutting_down"
    thread.join(15)
    assert_openai_error(held["resp"], 503, "shutting_down")
    for needle in (f"{tag}-long", f"{tag}-slow"):  # both jobs withdrawn: upstream closed
        entry = ended_stream(gw, needle)
        assert entry["client_closed"] is True and entry["ended"] - t_signal < 1 + 3
    assert gw.api_proc.popen.wait(15) == 0


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_worker_finishes_its_jobs_takes_no_new_ones_exits_0(
    make_gateway: Callable[..., Gateway], tag: str, sig: int
) -> None:
    gw = make_gateway({"WORKER_DRAIN_SECONDS": "30"}, workers=1)
    worker = gw.workers[0]
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=30, interval_ms=100))
    )  # ~3 s
    chunks = iter(stream)
    head = [next(chunks)]
    worker.signal(sig)
    later: dict[str, object] = {}

    def late_client() -> None:
        resp = gw.client().chat.completions.create(model=MODEL, messages=user(prompt(f"{tag}-later", reply=["late"])))
        later["text"] = resp.choices[0].message.content

    thread = threading.Thread(target=late_client)
    thread.start()
    with redis_of(gw) as r:
        wait_until(lambda: len(queued_ids(r)) == 2, 5, "second job queued")
        time.sleep(1)  # an idle slot and a queued job: a worker still taking jobs takes it now
        waiting = [j for j in queued_ids(r) if not r.exists(IN_PROGRESS + j)]
        assert len(waiting) == 1, "the stopping worker took a new job"
    assert _text(head) + _text(chunks) == EXPECTED
    assert worker.popen.wait(15) == 0
    assert creates(gw, f"{tag}-later") == []
    gw.add_worker()  # the queued request is served by the next worker
    thread.join(20)
    assert later["text"] == "late"
    entry = ended_stream(gw, tag)
    assert entry["outcome"] == "ok" and entry["pieces_sent"] == 30
