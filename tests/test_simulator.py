"""The decopy simulator, driven over real HTTP like the gateway's client drives it."""

from __future__ import annotations

import hashlib
import json
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudscraper
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {
    "Accept": "*/*",
    "Origin": "https://decopy.ai",
    "Referer": "https://decopy.ai/",
    "product-code": "067003",
    "product-serial": "eb0f5222701cbd6e67799c0cb99ec32b",
}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-a-boundary\r\n\x00"
END = "Data transfer completed."


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    """A simulator process on a free port; asserts it stops cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.decopy_sim", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("SIM_READY http://127.0.0.1:"), line
        yield line.split()[1]
    finally:
        proc.terminate()
        code = proc.wait(timeout=5)
        proc.stdout.close()
    assert code == 0


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def form(
    text: str,
    *,
    model: str = "DeepSeek-V3",
    chat_id: str | None = None,
    image: tuple[str, bytes, str] | None = None,
    drop: str = "",
) -> dict[str, Any]:
    """The multipart parts the gateway sends (``drop`` leaves one out)."""
    parts: dict[str, Any] = {
        "entertext": (None, text),
        "chat_id": (None, chat_id or str(uuid.uuid4())),
        "model": (None, model),
        "chat_group": (None, ""),
    }
    if image is not None:
        parts["upload_images"] = image
    parts.pop(drop, None)
    return parts


def create(
    http: requests.Session, url: str, text: str, headers: dict[str, str] = HEADERS, timeout: float = 10, **kw: Any
) -> requests.Response:
    resp = http.post(f"{url}/api/decopy/ask-ai/create-job", files=form(text, **kw), headers=headers, timeout=timeout)
    resp.close()
    return resp


def job_id(http: requests.Session, url: str, text: str, **kw: Any) -> str:
    body = create(http, url, text, **kw).json()
    assert body["code"] == 100000, body
    return str(body["result"]["job_id"])


def parse_sse(lines: Iterator[bytes]) -> tuple[list[str], bool]:
    """Pieces and whether the end marker came, as a liberal client reads them."""
    pieces: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8")
        if not line.startswith("data: "):
            continue
        payload = line[len("data: ") :]
        if payload == END:
            return pieces, True
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("data"), str):
            pieces.append(event["data"])
    return pieces, False


def open_stream(http: requests.Session, url: str, jid: str) -> requests.Response:
    return http.get(f"{url}/api/decopy/ask-ai/get-job/{jid}", headers=HEADERS, stream=True, timeout=10)


def stream(http: requests.Session, url: str, jid: str) -> tuple[list[str], bool]:
    with open_stream(http, url, jid) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return parse_sse(resp.iter_lines())


def ask(http: requests.Session, url: str, text: str, **kw: Any) -> tuple[list[str], bool]:
    return stream(http, url, job_id(http, url, text, **kw))


def sim_log(url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = requests.get(f"{url}/_sim/log", timeout=5).json()
    return entries


def log_for(url: str, text: str) -> list[dict[str, Any]]:
    return [e for e in sim_log(url) if e["entertext"] == text]


def directive(**fields: Any) -> str:
    """A prompt carrying a directive, unique per call so counters never collide."""
    return f"test {uuid.uuid4()}\n@@sim@@ {json.dumps(fields)}"


def test_default_answer_and_log(sim: str, http: requests.Session) -> None:
    text = "first line\nsay hello to the simulator\n\n"
    pieces, done = ask(http, sim, text)
    assert done and len(pieces) == 6
    assert "".join(pieces) == "Hello! You said: say hello to the simulator"
    create_entry, stream_entry = log_for(sim, text)
    assert create_entry["kind"] == "create" and create_entry["outcome"] == "ok"
    assert create_entry["headers"]["product-serial"] == HEADERS["product-serial"]
    assert create_entry["model"] == "DeepSeek-V3" and create_entry["image"] is None
    assert stream_entry["kind"] == "stream" and stream_entry["job_id"] == create_entry["job_id"]
    assert stream_entry["outcome"] == "ok" and stream_entry["pieces_sent"] == 6
    assert not stream_entry["client_closed"] and stream_entry["ended"] >= stream_entry["started"]


def test_cloudscraper_client_and_health(sim: str) -> None:
    with cloudscraper.create_scraper() as scraper:
        assert scraper.get(f"{sim}/_sim/health", timeout=5).text == "ok"
        pieces, done = ask(scraper, sim, directive(reply=["a", "b"]))
    assert pieces == ["a", "b"] and done


def test_pieces_round_trip_any_text(sim: str, http: requests.Session) -> None:
    reply = [
        "你好，世界",
        "😀👍🏽",
        "a\u2028b\u2029c\x85",
        'quote " \\ back\\slash',
        "two\nlines\r\n",
        "data: [DONE]",
        "[DONE]",
        END,
        "\ud800 lone",
        "",
    ]
    pieces, done = ask(http, sim, directive(reply=reply))
    assert pieces == reply and done


def test_n_pieces_with_interval(sim: str, http: requests.Session) -> None:
    start = time.monotonic()
    pieces, done = ask(http, sim, directive(n=5, interval_ms=40, first_ms=0))
    assert pieces == [f"tok{i} " for i in range(5)] and done
    assert time.monotonic() - start >= 0.16


def test_invalid_directive_is_no_directive(sim: str, http: requests.Session) -> None:
    pieces, _ = ask(http, sim, 'hi\n@@sim@@ {"reply": ["x"]}\n@@sim@@ {broken')
    assert "".join(pieces) == "Hello! You said: hi"


def test_image_upload(sim: str, http: requests.Session) -> None:
    text = directive(reply=["seen"])
    ask(http, sim, text, model="GPT-4o-mini", image=("image.png", PNG, "image/png"))
    image = log_for(sim, text)[0]["image"]
    assert image == {
        "filename": "image.png",
        "content_type": "image/png",
        "size": len(PNG),
        "sha256": hashlib.sha256(PNG).hexdigest(),
    }


BAD_HEADERS = {k: v for k, v in HEADERS.items() if k != "product-serial"}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"drop": "entertext"}, "entertext"),
        ({"drop": "chat_group"}, "chat_group"),
        ({"drop": "chat_id"}, "chat_id"),
        ({"chat_id": str(uuid.uuid1())}, "UUID4"),
        ({"model": "gpt-4o"}, "model"),
        ({"headers": BAD_HEADERS}, "product-serial"),
        ({"headers": {**HEADERS, "product-serial": "xyz"}}, "product-serial"),
        ({"headers": {**HEADERS, "Origin": "https://evil.example"}}, "Origin"),
        ({"image": ("image.png", PNG, "image/jpeg")}, "image/png"),
        ({"image": ("photo.png", PNG, "image/png")}, "filename"),
        ({"image": ("image.png", b"iVBORw0KGgo=", "image/png")}, "not a png"),
    ],
)
def test_create_validation(sim: str, http: requests.Session, kwargs: dict[str, Any], reason: str) -> None:
    text = f"validation {uuid.uuid4()}"
    resp = create(http, sim, text, **kwargs)
    body = resp.json()
    assert resp.status_code == 200 and body["code"] == 100400 and body["result"] is None
    assert reason in body["message"]["en"] and body["message"]["zh"]
    assert sim_log(sim)[-1]["outcome"] == "invalid"


def test_create_rejects_urlencoded_body(sim: str, http: requests.Session) -> None:
    data = {"entertext": "x", "chat_id": str(uuid.uuid4()), "model": "DeepSeek-V3", "chat_group": ""}
    with http.post(f"{sim}/api/decopy/ask-ai/create-job", data=data, headers=HEADERS, timeout=5) as resp:
        assert resp.json()["code"] == 100400 and "multipart" in resp.json()["message"]["en"]


def _expect(status: int, check: Callable[[requests.Response], bool]) -> Callable[[requests.Response], None]:
    def verify(resp: requests.Response) -> None:
        assert resp.status_code == status and check(resp), (resp.status_code, resp.headers, resp.text)

    return verify


HTTP_FAILURES = {
    "cloudflare": _expect(
        403, lambda r: r.headers.get("cf-mitigated") == "challenge" and "<title>Just a moment...</title>" in r.text
    ),
    "cloudflare503": _expect(503, lambda r: "cf-mitigated" not in r.headers and "Just a moment" in r.text),
    "429": _expect(429, lambda r: r.headers["retry-after"] == "1"),
    "500": _expect(500, lambda r: True),
    "502": _expect(502, lambda r: True),
    "code": _expect(
        200,
        lambda r: r.json()["code"] == 100500 and r.json()["message"]["en"] == "Service busy, please try again later",
    ),
    "html200": _expect(200, lambda r: r.headers["content-type"].startswith("text/html")),
}


@pytest.mark.parametrize("mode", [*HTTP_FAILURES, "nojobid"])
def test_create_fail_modes(sim: str, http: requests.Session, mode: str) -> None:
    text = directive(create_fail=mode)
    resp = create(http, sim, text)
    if mode == "nojobid":
        assert resp.json() == {"code": 100000, "result": {}, "message": {"zh": "成功", "en": "success"}}
    else:
        HTTP_FAILURES[mode](resp)
    assert log_for(sim, text)[0]["outcome"] == f"failed:{mode}"


def test_create_fail_drop_closes_without_answer(sim: str, http: requests.Session) -> None:
    text = directive(create_fail="drop")
    with pytest.raises(requests.ConnectionError, match="without response"):
        create(http, sim, text)
    assert log_for(sim, text)[0]["outcome"] == "failed:drop"


def test_create_fail_hang_then_answers(sim: str, http: requests.Session) -> None:
    start = time.monotonic()
    pieces, done = ask(http, sim, directive(create_fail="hang", hang_ms=300, reply=["late"]))
    assert time.monotonic() - start >= 0.3 and pieces == ["late"] and done


def test_times_and_key_counting(sim: str, http: requests.Session) -> None:
    key = str(uuid.uuid4())
    first = directive(create_fail="500", times=2, key=key)
    second = directive(create_fail="500", times=2, key=key, reply=["other text, same key"])
    statuses = [create(http, sim, t).status_code for t in (first, second, first, second)]
    assert statuses == [500, 500, 200, 200]
    # Counters are per endpoint kind: the same key still fails its stream twice.
    streamed = directive(stream_fail="500", times=2, key=key)
    jid = job_id(http, sim, streamed)
    statuses = []
    for _ in range(3):
        with open_stream(http, sim, jid) as resp:
            statuses.append(resp.status_code)
    assert statuses == [500, 500, 200]


def test_times_counting_is_concurrency_safe(sim: str) -> None:
    text = directive(create_fail="429", times=5)

    def one(_: int) -> int:
        with requests.Session() as session:
            return create(session, sim, text).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert statuses.count(429) == 5 and statuses.count(200) == 15


@pytest.mark.parametrize("mode", ["cloudflare", "429", "500", "code"])
def test_stream_fail_http_modes(sim: str, http: requests.Session, mode: str) -> None:
    text = directive(stream_fail=mode)
    with open_stream(http, sim, job_id(http, sim, text)) as resp:
        HTTP_FAILURES[mode](resp)
    assert log_for(sim, text)[1]["outcome"] == f"failed:{mode}"


def test_unknown_job(sim: str, http: requests.Session) -> None:
    with open_stream(http, sim, "no-such-job") as resp:
        body = resp.json()
    assert resp.status_code == 200 and body["code"] == 100404 and body["message"]["en"]


def test_stream_truncate(sim: str, http: requests.Session) -> None:
    text = directive(n=10, stream_fail="truncate", truncate_after=4)
    assert ask(http, sim, text) == ([f"tok{i} " for i in range(4)], False)
    assert log_for(sim, text)[1]["outcome"] == "failed:truncate"


def test_stream_cut_breaks_the_connection(sim: str, http: requests.Session) -> None:
    text = directive(n=10, stream_fail="cut", after=2)
    seen: list[bytes] = []
    with open_stream(http, sim, job_id(http, sim, text)) as resp:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            seen.extend(resp.iter_lines())
    assert parse_sse(iter(seen)) == (["tok0 ", "tok1 "], False)


def test_stream_hang_after(sim: str, http: requests.Session) -> None:
    jid = job_id(http, sim, directive(n=4, stream_fail="hang_after", after=2, hang_ms=300, interval_ms=1))
    stamps: list[float] = []
    with open_stream(http, sim, jid) as resp:
        for line in resp.iter_lines():
            if line.startswith(b"data: {"):
                stamps.append(time.monotonic())
    assert len(stamps) == 4 and stamps[2] - stamps[1] >= 0.29 and stamps[1] - stamps[0] < 0.2


def test_malformed_stream_keeps_real_pieces(sim: str, http: requests.Session) -> None:
    reply = ["alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta "]
    with open_stream(http, sim, job_id(http, sim, directive(reply=reply, malformed=True))) as resp:
        lines = list(resp.iter_lines())
    assert parse_sse(iter(lines)) == (reply, True)
    for junk in (b"data: {not json", b"event: ping", b"id: 7", b": comment", b"retry: 1000"):
        assert junk in lines
    assert any(b'"data"' not in line and line.startswith(b'data: {"') for line in lines)


def test_echo_returns_entertext(sim: str, http: requests.Session) -> None:
    text = "System: be terse\n\nUser: 你好 " + "x" * 100 + '\n@@sim@@ {"echo": true}'
    pieces, done = ask(http, sim, text)
    assert "".join(pieces) == text and done and max(map(len, pieces)) == 40


def test_think_tags_split_across_pieces(sim: str, http: requests.Session) -> None:
    pieces, done = ask(http, sim, directive(think="let me think", reply=["The ", "answer."]))
    assert "".join(pieces) == "<think>let me think</think>The answer." and done
    assert pieces[0] == "<thi" and not any("<think>" in p or "</think>" in p for p in pieces)


def test_client_close_is_detected(sim: str, http: requests.Session) -> None:
    text = directive(n=50, interval_ms=200, first_ms=0)
    with open_stream(http, sim, job_id(http, sim, text)) as resp:
        first = next(resp.iter_lines())
        assert first.startswith(b"data: ")
    closed_at = time.time()
    entry = wait_for_entry(sim, text, 1, lambda e: bool(e["client_closed"]))
    assert entry["client_closed"] and entry["outcome"] == "client_closed"
    assert entry["ended"] - closed_at < 1 and entry["pieces_sent"] < 5


def test_reset_clears_log_and_counters(sim: str, http: requests.Session) -> None:
    text = directive(create_fail="502", times=1)
    assert create(http, sim, text).status_code == 502
    assert create(http, sim, text).status_code == 200
    with http.post(f"{sim}/_sim/reset", timeout=5):
        pass
    assert sim_log(sim) == []
    assert create(http, sim, text).status_code == 502


def wait_for_entry(url: str, text: str, index: int, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the log for up to 1 s until ``done`` holds for the entry."""
    deadline = time.monotonic() + 1
    entry = log_for(url, text)[index]
    while not done(entry) and time.monotonic() < deadline:
        time.sleep(0.02)
        entry = log_for(url, text)[index]
    return entry


def test_create_hang_notices_client_leaving(sim: str, http: requests.Session) -> None:
    text = directive(create_fail="hang", hang_ms=5000)
    with pytest.raises(requests.exceptions.ReadTimeout):
        create(http, sim, text, timeout=0.3)
    entry = wait_for_entry(sim, text, 0, lambda e: bool(e["client_closed"]))
    assert entry["client_closed"] and entry["outcome"] == "failed:hang" and entry["job_id"] is None


def test_stream_fail_drop(sim: str, http: requests.Session) -> None:
    jid = job_id(http, sim, directive(stream_fail="drop"))
    with pytest.raises(requests.ConnectionError, match="without response"):
        open_stream(http, sim, jid)
