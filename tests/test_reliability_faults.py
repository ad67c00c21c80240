"""Faults caused for real: clients that leave, workers and APIs killed with
SIGKILL, jobs re-run by arq. What the client sees (openai SDK, raw httpx) and what the upstream
saw (the simulator's log) are both checked.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import orjson
import pytest

from shared import messages, names
from tests.conftest import Gateway, wait_until
from tests.reliability_support import (
    IN_PROGRESS,
    MODEL,
    body,
    creates,
    ended_stream,
    private_gateway,
    prompt,
    queued_ids,
    redis_of,
    streams,
    user,
    worker_running,
)

pytestmark = pytest.mark.slow


# --- 1. The client goes away ---------------------------------------------------------------


@pytest.fixture(scope="module")
def one_slot() -> Iterator[Gateway]:
    """One worker with one slot, so a slot that is not given back shows as a queue timeout."""
    with private_gateway({"WORKER_CONCURRENCY": "1", "QUEUE_TIMEOUT": "6"}, workers=1) as gw:
        yield gw


def test_client_leaves_mid_stream(one_slot: Gateway, tag: str) -> None:
    gw = one_slot
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=400, interval_ms=50))
    )  # ~20 s answer
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()

    # Closed by the gateway (not ended by the answer, which runs ~20 s: longer than the wait).
    entry = ended_stream(gw, tag, timeout=10)
    assert entry["client_closed"] is True and entry["outcome"] == "client_closed"
    assert entry["pieces_sent"] < 400
    with redis_of(gw) as r:
        wait_until(lambda: not queued_ids(r) and not r.keys(IN_PROGRESS + "*"), 10, "job withdrawn")

    # The only slot is free again: a new request is served (it would get a 503 queue_timeout
    # after QUEUE_TIMEOUT if the aborted job still held the slot for its ~20 s).
    resp = gw.client().chat.completions.create(model=MODEL, messages=user(prompt(f"{tag}-next", reply=["ok"])))
    assert resp.choices[0].message.content == "ok"
    time.sleep(1)
    assert len(creates(gw, tag + " ")) == 1 and len(streams(gw, tag + " ")) == 1, "no later upstream call"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_client_leaves_while_queued(one_slot: Gateway, tag: str, stream: bool) -> None:
    gw = one_slot
    busy = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(f"{tag}-busy", n=40, interval_ms=100))
    )  # holds the slot ~4 s
    pieces = iter(busy)
    next(pieces)
    with redis_of(gw) as r:
        assert len(queued_ids(r)) == 1
        # A second request waits for the slot; its client gives up after 1.5 s.
        with httpx.Client(base_url=gw.base_url, timeout=1.5) as http, pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", json=body(prompt(f"{tag}-queued"), stream=stream))
        wait_until(lambda: len(queued_ids(r)) == 1, 5, "the queued job withdrawn")
        rest = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        assert rest.endswith("tok39 ")
        wait_until(lambda: not queued_ids(r), 5, "queue empty")
    time.sleep(1.5)  # the free worker would have taken the queued job by now
    assert creates(gw, f"{tag}-queued") == [], "a withdrawn job reached the upstream"


def test_client_leaves_while_create_job_hangs(one_slot: Gateway, tag: str) -> None:
    """A cancelled job lets go of the upstream even while it waits for create-job's answer."""
    gw = one_slot
    with httpx.Client(base_url=gw.base_url, timeout=2) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body(prompt(tag, create_fail="hang", hang_ms=30_000)))
    # Closed by the gateway while create-job hung (its answer would come after 30 s, past the wait).
    entry = wait_until(lambda: [e for e in creates(gw, tag) if e["ended"]], 10, "create-job closed")[0]
    assert entry["client_closed"] is True
    assert streams(gw, tag) == []


def test_api_killed_mid_stream_stops_the_upstream(make_gateway: Callable[..., Gateway], tag: str) -> None:
    """Nobody left to withdraw the job: the worker sees its messages reach no one and stops."""
    gw = make_gateway({}, workers=1)
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=400, interval_ms=50))
    )
    next(iter(stream))
    os.kill(gw.api_proc.pid, signal.SIGKILL)
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for _ in stream:
            pass
    # Closed by the worker while the ~20 s answer was still running (the wait is shorter).
    entry = ended_stream(gw, tag, timeout=10)
    assert entry["client_closed"] is True and entry["pieces_sent"] < 400
    wait_until(lambda: "outcome=abandoned" in gw.workers[0].log(), 10, "worker logged the abandoned job")


# --- 2. A worker is killed ------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_idle() -> Iterator[Gateway]:
    env = {"IDLE_TIMEOUT": "3", "WORKER_HEARTBEAT": "1"}
    with private_gateway(env, workers=1) as gw:
        yield gw


def test_worker_killed_mid_stream(short_idle: Gateway, tag: str) -> None:
    gw = short_idle
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=400, interval_ms=50))
    )
    text = ""
    for chunk in stream:
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if text:
            break
    with redis_of(gw) as r:
        (job_id,) = queued_ids(r)
        victim = worker_running(gw, job_id)
        victim.signal(signal.SIGKILL)
        t_kill = time.monotonic()
        with pytest.raises(openai.APIError) as exc:
            for chunk in stream:
                text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        waited = time.monotonic() - t_kill
        assert "went silent" in exc.value.message and exc.value.code == "idle_timeout"
        assert waited < 15, f"error after {waited:.1f}s"
        assert text.startswith("tok0 ")
        entry = ended_stream(gw, tag)
        assert entry["client_closed"] is True  # the dead worker's socket closed with it

        # The API withdrew the job; arq's in-progress key of the dead worker is still there.
        # Simulate its expiry (it would last TOTAL_TIMEOUT + 70 s): delete it, and give arq a
        # live worker that would re-run the job if it were still queued.
        assert queued_ids(r) == []
        assert r.delete(IN_PROGRESS + job_id) == 1
        gw.add_worker()
        gw.wait_workers_ready()
        r.publish(names.WAKE_CHANNEL, b"1")
        time.sleep(2)
    assert len(creates(gw, tag)) == 1 and len(streams(gw, tag)) == 1, "the job ran upstream again"


def test_rerun_after_crash_is_refused_even_with_a_listener(make_gateway: Callable[..., Gateway], tag: str) -> None:
    """Worker and API both killed mid-answer, so the job stays in arq's queue; a listener stays on
    its channel. Once arq's in-progress key is gone (deleted here, as if expired), a live worker
    takes the job again: it must refuse it, without calling the upstream or publishing anything."""
    gw = make_gateway({"QUEUE_TIMEOUT": "120"}, workers=1)
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=user(prompt(tag, n=400, interval_ms=50))
    )
    next(iter(stream))
    with redis_of(gw) as r:
        (job_id,) = queued_ids(r)
        listener = r.pubsub()  # type: ignore[no-untyped-call]
        listener.subscribe(names.job_channel(job_id))
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        os.kill(gw.workers[0].pid, signal.SIGKILL)
        os.kill(gw.api_proc.pid, signal.SIGKILL)
        stream.close()
        time.sleep(0.5)
        while listener.get_message(timeout=0.2) is not None:
            pass  # what the first run published before it died
        assert queued_ids(r) == [job_id]
        assert r.delete(IN_PROGRESS + job_id) == 1
        fresh = gw.add_worker()
        gw.wait_workers_ready()
        r.publish(names.WAKE_CHANNEL, b"1")
        wait_until(lambda: "re-run refused" in fresh.log(), 10, "the re-run refused")
        assert listener.get_message(timeout=1) is None, "the refused re-run published something"
        wait_until(lambda: not queued_ids(r), 5, "the refused job left the queue")
        listener.close()
    assert "outcome=rerun_refused" in fresh.log()
    assert len(creates(gw, tag)) == 1, "the job ran upstream again"


@pytest.mark.parametrize("text_sent", [True, False], ids=["after-text", "before-text"])
def test_job_cancelled_at_worker_shutdown_is_not_run_again(
    make_gateway: Callable[..., Gateway], tag: str, text_sent: bool
) -> None:
    """arq re-queues a job cancelled at shutdown (here: WORKER_DRAIN_SECONDS ran out) and another
    worker takes it at once: it is refused; the client got an ``interrupted`` error straight away."""
    gw = make_gateway({"WORKER_DRAIN_SECONDS": "1", "UPSTREAM_READ_TIMEOUT": "60"}, workers=2)
    fields = {"n": 400, "interval_ms": 50} if text_sent else {"create_fail": "hang", "hang_ms": 60_000}
    got: dict[str, object] = {}

    def client() -> None:
        with httpx.Client(base_url=gw.base_url, timeout=30) as http:
            got["resp"] = http.post("/v1/chat/completions", json=body(prompt(tag, **fields)))

    thread = threading.Thread(target=client)
    thread.start()
    with redis_of(gw) as r:
        (job_id,) = wait_until(lambda: queued_ids(r), 10, "job queued")
        victim = worker_running(gw, job_id)
        other = next(w for w in gw.workers if w is not victim)
        if text_sent:
            wait_until(lambda: [e for e in streams(gw, tag) if e["pieces_sent"] > 0], 10, "text went out")
        victim.signal(signal.SIGTERM)
        thread.join(20)
        assert not thread.is_alive()
        resp = got["resp"]
        assert isinstance(resp, httpx.Response)
        if text_sent:  # the stream had started: an error event ends it
            events = [orjson.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
            assert events[-1]["error"]["code"] == "interrupted"
        else:  # nothing sent yet: a real 503 with Retry-After
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "interrupted"
            assert resp.headers["retry-after"] == "1"
        assert victim.popen.wait(15) == 0
        wait_until(lambda: "re-run refused" in other.log(), 10, "the other worker refused the re-run")
        wait_until(lambda: not queued_ids(r), 5, "queue empty")
    assert len(creates(gw, tag)) == 1, "the job ran upstream again"
    closed = [e for e in gw.sim_entries(tag) if e["ended"] and e["client_closed"]]
    assert closed, "the cancelled job's upstream call was not closed"


def test_api_fails_a_stream_whose_job_starts_again(make_gateway: Callable[..., Gateway], tag: str) -> None:
    """The API's own guard, should a job ever run twice: here the test plays the worker and
    publishes a second ``start`` (a re-run restarts numbering at 0) after some text."""
    gw = make_gateway({}, workers=0)
    result: dict[str, object] = {}

    def client() -> None:
        stream = gw.client().chat.completions.create(model=MODEL, stream=True, messages=user(tag))
        text = ""
        try:
            for chunk in stream:
                text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        except openai.APIError as exc:
            result["error"] = exc
        result["text"] = text

    thread = threading.Thread(target=client)
    thread.start()
    with redis_of(gw) as r:
        (job_id,) = wait_until(lambda: queued_ids(r), 10, "job queued")
        channel = names.job_channel(job_id)
        for msg in (
            {"seq": 0, "kind": "start", "worker": "w1"},
            {"seq": 1, "kind": "delta", "text": "first "},
            {"seq": 0, "kind": "start", "worker": "w2"},
            {"seq": 1, "kind": "delta", "text": "second "},
            {"seq": 2, "kind": "done", "finish_reason": "stop"},
        ):
            assert r.publish(channel, messages.encode(msg)) == 1  # type: ignore[arg-type]
        thread.join(15)
        assert result["text"] == "first "
        err = result["error"]
        assert isinstance(err, openai.APIError) and err.code == "job_rerun"
        wait_until(lambda: not queued_ids(r), 5, "the job withdrawn")


# --- Regression: one job's cancel must not touch a connection another job uses ---


def test_cancelled_job_spares_the_jobs_sharing_its_client() -> None:
    """Upstream calls share one client and its kept-alive connections. A job cancelled mid-answer
    must close its own upstream stream at once, and only its own: a job that reuses the
    connection a finished job left, and one streaming beside it, both get every piece. (Found
    with the threaded client: a finished job's late cancel shut the socket the next job had
    reused: 'get-job: ProtocolError: Connection broken: IncompleteRead'.)"""
    import asyncio

    from devtools.procs import Stack
    from shared.messages import ChatJob
    from shared.settings import Settings
    from tests.conftest import directive
    from worker.upstream.decopy.client import DecopyUpstream

    def job(text: str) -> ChatJob:
        return {"request_id": "r", "model": MODEL, "upstream_model": "DeepSeek-V3", "prompt": text, "image": None}

    async def collect(upstream: DecopyUpstream, text: str) -> str:
        return "".join([piece async for batch in upstream.pieces(job(text)) for piece in batch])

    slow = [f"{i} " for i in range(20)]

    async def scenario(sim_url: str) -> None:
        upstream = DecopyUpstream(Settings(decopy_base_url=sim_url))
        try:
            assert await collect(upstream, "first " + directive(reply=["a", "b"])) == "ab"
            second = asyncio.ensure_future(collect(upstream, "second " + directive(reply=slow, interval_ms=50)))
            doomed = asyncio.ensure_future(collect(upstream, "doomed " + directive(reply=slow, interval_ms=50)))
            await asyncio.sleep(0.4)  # both are reading their answers; the second on the first one's connection
            doomed.cancel()
            assert await second == "".join(slow)
            assert doomed.cancelled()
            assert upstream.pool.created == 2  # the first job's session was reused, by one of them
        finally:
            await upstream.aclose()

    stack = Stack()
    try:
        _, sim_url = stack.simulator()
        asyncio.run(scenario(sim_url))

        def streams() -> dict[str, dict[str, object]]:
            log = httpx.get(sim_url + "/_sim/log", timeout=5).json()
            names = {e["job_id"]: e["entertext"].split()[0] for e in log if e["kind"] == "create"}
            return {names[e["job_id"]]: e for e in log if e["kind"] == "stream"}

        doomed = wait_until(lambda: (e := streams()["doomed"])["ended"] and e, 5, "the doomed stream closed")
        assert doomed["client_closed"] is True and doomed["pieces_sent"] < len(slow)
        second = streams()["second"]
        assert second["outcome"] == "ok" and second["pieces_sent"] == len(slow)
    finally:
        stack.stop()
