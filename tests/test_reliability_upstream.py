"""What decopy does wrong, caused for real by the simulator: every failure mode
before the first delta is retried with backoff and jitter within UPSTREAM_RETRIES (a challenged
or broken cloudscraper session is replaced), then reported with a status and a message that say
what the upstream did; after the first delta, no retry; malformed lines are skipped.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterator

import openai
import pytest

from tests.conftest import Gateway, wait_until
from tests.reliability_support import MODEL, creates, private_gateway, prompt, streams, user
from worker.jobs.runner import backoff_delay

pytestmark = pytest.mark.slow

RETRIES = 2
BASE, CEILING = 0.1, 0.4

# mode -> (HTTP status once retries run out, what the message must say, session replaced?)
CREATE_MODES: dict[str, tuple[int, str, bool]] = {
    "cloudflare": (503, "Cloudflare challenge (HTTP 403)", True),
    "cloudflare503": (503, "Cloudflare challenge (HTTP 503)", True),
    "429": (503, "rate limited (HTTP 429)", False),
    "500": (502, "HTTP 500", False),
    "502": (502, "HTTP 502", False),
    "code": (502, "code 100500: Service busy", False),
    "nojobid": (502, "no result.job_id", False),
    "drop": (502, "ConnectionError", True),
    "hang": (504, "ReadTimeout", True),
    "html200": (502, "answer is not JSON", False),
}
STREAM_MODES: dict[str, tuple[int, str, bool]] = {
    **{m: v for m, v in CREATE_MODES.items() if m not in ("nojobid", "code", "html200")},
    "code": (502, "expected an event stream, got application/json", False),
    "html200": (502, "expected an event stream, got text/html", False),
}
CASES = [("create", m) for m in CREATE_MODES] + [("stream", m) for m in STREAM_MODES]


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    env = {
        "UPSTREAM_RETRIES": str(RETRIES),
        "UPSTREAM_READ_TIMEOUT": "1",
        "UPSTREAM_BACKOFF_BASE": str(BASE),
        "UPSTREAM_BACKOFF_MAX": str(CEILING),
    }
    with private_gateway(env, workers=1) as gw:  # one worker: its log counts the sessions
        gw.client().chat.completions.create(model=MODEL, messages=user("warm up: one idle session"))
        yield gw


def _sessions(gw: Gateway) -> int:
    return gw.workers[0].log().count("new upstream session #")


def _expected(where: str, mode: str) -> tuple[int, str, bool]:
    return (CREATE_MODES if where == "create" else STREAM_MODES)[mode]


@pytest.mark.parametrize("where, mode", CASES)
def test_failure_before_text_is_retried_then_succeeds(gw: Gateway, tag: str, where: str, mode: str) -> None:
    before = _sessions(gw)
    stream = gw.client().chat.completions.create(
        model=MODEL,
        stream=True,
        messages=user(prompt(tag, reply=["all ", "good"], key=tag, times=RETRIES, **{f"{where}_fail": mode})),
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "all good"
    calls = creates(gw, tag) if where == "create" else streams(gw, tag)
    assert len(calls) == RETRIES + 1
    assert [c["outcome"] for c in calls[:-1]] == [f"failed:{mode}"] * RETRIES and calls[-1]["outcome"] == "ok"
    replaced = _expected(where, mode)[2]
    assert _sessions(gw) - before == (RETRIES if replaced else 0), "sessions created during the retries"


@pytest.mark.parametrize("where, mode", CASES)
def test_failure_before_text_that_persists_is_an_http_error(gw: Gateway, tag: str, where: str, mode: str) -> None:
    status, says, _ = _expected(where, mode)
    with pytest.raises(openai.APIStatusError) as exc:
        gw.client().chat.completions.create(
            model=MODEL, stream=True, messages=user(prompt(tag, **{f"{where}_fail": mode}))
        )
    assert exc.value.status_code == status
    assert says in exc.value.message and f"after {RETRIES + 1} attempts" in exc.value.message, exc.value.message
    body = exc.value.body
    assert isinstance(body, dict) and body["type"] == "upstream_error"
    if status == 503:
        assert exc.value.response.headers["retry-after"] == "10"
    calls = creates(gw, tag) if where == "create" else streams(gw, tag)
    assert len(calls) == RETRIES + 1


def test_retries_back_off(gw: Gateway, tag: str) -> None:
    """Waits between attempts are at least the fixed half of each exponential step (the jitter
    only adds); a loaded machine can only make them longer."""
    with pytest.raises(openai.APIStatusError):
        gw.client().chat.completions.create(model=MODEL, messages=user(prompt(tag, create_fail="500")))
    starts = [c["started"] for c in creates(gw, tag)]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == RETRIES
    for attempt, gap in enumerate(gaps, start=1):
        assert gap >= min(CEILING, BASE * 2 ** (attempt - 1)) / 2 - 0.01, gaps


def test_backoff_delay_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt in range(1, 10):
        top = min(8.0, 0.5 * 2 ** (attempt - 1))
        values = {backoff_delay(attempt, 0.5, 8.0, rng.uniform) for _ in range(50)}
        assert all(top / 2 <= v <= top for v in values)
        assert len(values) > 40  # jittered: not one fixed delay
    assert backoff_delay(3, 0.5, 8.0, lambda a, b: b) == 2.0
    assert backoff_delay(3, 0.5, 8.0, lambda a, b: a) == 1.0


@pytest.mark.parametrize(
    "mode, says", [("cut", "Connection broken"), ("hang_after", "ReadTimeout"), ("truncate", "without its end marker")]
)
def test_failure_after_text_is_an_error_event_without_retry(gw: Gateway, tag: str, mode: str, says: str) -> None:
    stream = gw.client().chat.completions.create(
        model=MODEL,
        stream=True,
        messages=user(
            prompt(tag, reply=["one ", "two ", "three ", "four"], stream_fail=mode, after=2, truncate_after=2)
        ),
    )
    seen = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            seen += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert seen == "one two "
    assert says in exc.value.message and "after 1 attempt" in exc.value.message
    assert len(creates(gw, tag)) == 1 and len(streams(gw, tag)) == 1


def test_malformed_lines_are_skipped(gw: Gateway, tag: str) -> None:
    reply = ["Lines ", "of junk ", "between ", "every ", "piece."]
    resp = gw.client().chat.completions.create(model=MODEL, messages=user(prompt(tag, reply=reply, malformed=True)))
    assert resp.choices[0].message.content == "".join(reply)
    assert resp.choices[0].finish_reason == "stop"
    wait_until(lambda: "skipped upstream line" in gw.workers[0].log(), 5, "skipped lines logged")


def test_connect_timeout_is_retried_then_504(make_gateway: Callable[..., Gateway]) -> None:
    """A real connect timeout on loopback: a listening socket whose accept queue is full makes
    the kernel drop new SYNs, so connect() waits out UPSTREAM_CONNECT_TIMEOUT."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        port = blackhole.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            while True:  # fill the accept queue until a connect attempt itself times out
                filler = socket.socket()
                filler.settimeout(0.3)
                try:
                    filler.connect(("127.0.0.1", port))
                except OSError:
                    filler.close()
                    break
                fillers.append(filler)
            gw = make_gateway(
                {
                    "DECOPY_BASE_URL": f"http://127.0.0.1:{port}",
                    "UPSTREAM_CONNECT_TIMEOUT": "0.5",
                    "UPSTREAM_RETRIES": "1",
                },
                workers=1,
            )
            with pytest.raises(openai.APIStatusError) as exc:
                gw.client().chat.completions.create(model=MODEL, stream=True, messages=user("hello"))
        finally:
            for filler in fillers:
                filler.close()
    assert exc.value.status_code == 504
    assert "create-job: ConnectTimeout" in exc.value.message and "after 2 attempts" in exc.value.message
    assert gw.workers[0].log().count("new upstream session #") == 2  # replaced after the timeout
