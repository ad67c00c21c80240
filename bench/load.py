"""Open-loop load generator: one client process of the benchmark (``python -m bench.load``).

Starts a new stream every ``1/rate`` seconds whatever the server does (a closed loop would slow
down with the server and hide its queueing), either straight to the decopy simulator (its own
protocol: multipart create-job, then the get-job event stream) or through the gateway in one
of its dialects (``--dialect``: chat completions, the Responses API, Anthropic Messages, legacy
completions). Every stream asks the simulator, by directive, for ``deltas`` pieces ``"<sid>.<i> "``
unique to that stream, so each answer can be checked piece by piece: lost, duplicated,
reordered and foreign ("mixed-up") pieces are counted.

aiohttp rather than httpx: its C parser keeps the client's own CPU per event several times
lower, and on a shared 2-core box the client competes with the server it measures. The
client also measures its own lag (how late each stream started against its schedule, and how
late the event loop woke up), so a saturated client shows instead of passing for a slow server.

Writes one JSON document (``--out``) with a record per stream and the client's own figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

CREATE_PATH = "/api/decopy/ask-ai/create-job"
GET_JOB_PATH = "/api/decopy/ask-ai/get-job/"
END_MARKER = b"Data transfer completed."
SIM_HEADERS = {
    "Accept": "*/*",
    "Origin": "https://decopy.ai",
    "Referer": "https://decopy.ai/",
    "product-code": "067003",
    "product-serial": "eb0f5222701cbd6e67799c0cb99ec32b",
}


@dataclass
class Stream:
    """What one stream saw. Times are seconds from its (actual) start."""

    sid: str
    scheduled: float  # monotonic time it was due
    start: float = 0.0  # monotonic time it started
    ttft: float | None = None
    total: float | None = None
    events: int = 0  # text events received (the gateway may join pieces that arrive together)
    pieces: int = 0  # pieces found in the text
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    mixed: int = 0  # pieces of another stream
    text_ok: bool = False
    error: str | None = None
    texts: list[str] = field(default_factory=list, repr=False)


def pieces_for(sid: str, deltas: int) -> list[str]:
    return [f"{sid}.{i} " for i in range(deltas)]


def directive(sid: str, deltas: int, interval_ms: int, first_ms: int) -> str:
    body = {"reply": pieces_for(sid, deltas), "interval_ms": interval_ms, "first_ms": first_ms}
    return "@@sim@@ " + json.dumps(body, separators=(",", ":"))


def check(stream: Stream, deltas: int) -> None:
    """Compare what arrived with what the simulator sent; fills the loss/dup/order counters."""
    text = "".join(stream.texts)
    stream.text_ok = text == "".join(pieces_for(stream.sid, deltas))
    seen: set[int] = set()
    highest = -1
    for token in text.split(" "):
        if not token:
            continue
        stream.pieces += 1
        sid, _, idx = token.rpartition(".")
        if sid != stream.sid or not idx.isdigit():
            stream.mixed += 1
            continue
        i = int(idx)
        if i in seen:
            stream.duplicated += 1
            continue
        seen.add(i)
        if i < highest:
            stream.reordered += 1
        highest = max(highest, i)
    stream.lost = sum(1 for i in range(deltas) if i not in seen)


def multipart(prompt: str, model: str) -> tuple[bytes, str]:
    """create-job's form, encoded once by hand (aiohttp's FormData costs the client more CPU)."""
    boundary = uuid.uuid4().hex
    fields = {"entertext": prompt, "chat_id": str(uuid.uuid4()), "model": model, "chat_group": ""}
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def _lines(resp: aiohttp.ClientResponse) -> Any:
    """The response body's lines (without line ends), as they arrive."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        if b"\n" not in buf:
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line
    if buf:
        yield buf


async def direct(session: aiohttp.ClientSession, base: str, s: Stream, prompt: str) -> None:
    body, ctype = multipart(prompt, "DeepSeek-V3")
    async with session.post(base + CREATE_PATH, data=body, headers={**SIM_HEADERS, "Content-Type": ctype}) as resp:
        answer = orjson.loads(await resp.read())
    if resp.status != 200 or answer.get("code") != 100000:
        s.error = f"create-job: HTTP {resp.status} {answer!r:.200}"
        return
    ticket = answer["result"]["job_id"]
    headers = {**SIM_HEADERS, "Accept": "text/event-stream"}
    async with session.get(base + GET_JOB_PATH + ticket, headers=headers) as resp:
        if resp.status != 200:
            s.error = f"get-job: HTTP {resp.status}"
            return
        async for line in _lines(resp):
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == END_MARKER:
                s.total = time.monotonic() - s.start
                return
            piece = orjson.loads(payload).get("data")
            if piece:
                if s.ttft is None:
                    s.ttft = time.monotonic() - s.start
                s.events += 1
                s.texts.append(piece)
    s.error = "get-job: stream ended without its end marker"


def _request(dialect: str, prompt: str) -> tuple[str, bytes, dict[str, str]]:
    """Path, body and headers of one streamed request in ``dialect``."""
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    model = "decopy-deepseek-v3"
    if dialect == "responses":
        return "/v1/responses", orjson.dumps({"model": model, "stream": True, "store": False, "input": prompt}), headers
    if dialect == "messages":
        body = {"model": model, "stream": True, "max_tokens": 4096, "messages": [{"role": "user", "content": prompt}]}
        return "/v1/messages", orjson.dumps(body), {**headers, "anthropic-version": "2023-06-01"}
    if dialect == "completions":
        return "/v1/completions", orjson.dumps({"model": model, "stream": True, "prompt": prompt}), headers
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    return "/v1/chat/completions", orjson.dumps(body), headers


def _read_event(dialect: str, event: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """One data event of a stream: ``(text piece, terminal kind, error)``.

    The terminal kind is ``"ok"`` for a clean end that the dialect marks inside an event (the
    Responses API's ``response.completed``, Anthropic's ``message_stop``); chat and completions
    end with ``[DONE]`` instead.
    """
    if dialect == "responses":
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return event.get("delta"), None, None
        if kind == "response.completed":
            return None, "ok", None
        if kind in ("response.failed", "response.incomplete", "error"):
            return None, None, f"{kind}: {event!r:.200}"
        return None, None, None
    if dialect == "messages":
        kind = event.get("type")
        if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            return event["delta"].get("text"), None, None
        if kind == "message_delta" and event["delta"].get("stop_reason") not in (None, "end_turn"):
            return None, None, f"stop_reason {event['delta'].get('stop_reason')!r}"
        if kind == "message_stop":
            return None, "ok", None
        if kind == "error":
            return None, None, f"error event: {event.get('error')!r:.200}"
        return None, None, None
    if "error" in event:
        return None, None, f"error event: {event['error']!r:.200}"
    for choice in event.get("choices") or ():
        piece = choice.get("text") if dialect == "completions" else choice["delta"].get("content")
        reason = choice.get("finish_reason")
        if reason not in (None, "stop"):
            return piece, None, f"finish_reason {reason!r}"
        return piece, None, None
    return None, None, None


async def gateway(session: aiohttp.ClientSession, base: str, s: Stream, prompt: str, dialect: str = "chat") -> None:
    path, body, headers = _request(dialect, prompt)
    async with session.post(base + path, data=body, headers=headers) as resp:
        if resp.status != 200:
            s.error = f"HTTP {resp.status}: {(await resp.read())[:200]!r}"
            return
        async for line in _lines(resp):
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                s.total = time.monotonic() - s.start
                return
            piece, end, error = _read_event(dialect, orjson.loads(payload))
            if piece:
                if s.ttft is None:
                    s.ttft = time.monotonic() - s.start
                s.events += 1
                s.texts.append(piece)
            if error is not None:
                s.error = error
                return
            if end is not None:
                s.total = time.monotonic() - s.start
                return
    s.error = "stream ended before its end"


async def one(
    session: aiohttp.ClientSession, target: str, base: str, s: Stream, args: argparse.Namespace, timeout: float
) -> None:
    prompt = directive(s.sid, args.deltas, args.interval_ms, args.first_ms)
    s.start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            if target == "direct":
                await direct(session, base, s, prompt)
            else:
                await gateway(session, base, s, prompt, args.dialect)
    except TimeoutError:
        s.error = f"no complete answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
        s.error = f"{type(exc).__name__}: {exc}"[:300]
    check(s, args.deltas)


async def loop_lag(samples: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    """How late the event loop wakes from a short sleep: a busy client shows here."""
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(period)
        samples.append(time.monotonic() - t - period)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    count = max(1, round(args.rate * args.duration))
    streams: list[Stream] = []
    lags: list[float] = []
    stop = asyncio.Event()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        lag_task = asyncio.create_task(loop_lag(lags, stop))
        tasks = []
        t0 = time.monotonic() + 0.05 + args.offset
        for i in range(count):
            due = t0 + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            s = Stream(sid=f"{args.tag}{i:x}", scheduled=due)
            streams.append(s)
            tasks.append(asyncio.create_task(one(session, args.target, args.url, s, args, args.timeout)))
        await asyncio.gather(*tasks)
        ended = time.monotonic()
        stop.set()
        await lag_task
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    records = []
    for s in streams:
        d = asdict(s)
        d.pop("texts")
        d["start_lag"] = s.start - s.scheduled
        records.append(d)
    return {
        "target": args.target,
        "dialect": args.dialect,
        "rate": args.rate,
        "duration": args.duration,
        "deltas": args.deltas,
        "t0": t0,
        "ended": ended,
        "streams": records,
        "client": {
            "cpu_s": cpu,
            "loop_lag_samples": len(lags),
            "loop_lag_max_s": max(lags, default=0.0),
            "loop_lag_p99_s": sorted(lags)[int(0.99 * (len(lags) - 1))] if lags else 0.0,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", choices=("direct", "gateway"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument(
        "--dialect",
        choices=("chat", "responses", "messages", "completions"),
        default="chat",
        help="the gateway API the streams speak",
    )
    p.add_argument("--rate", type=float, required=True, help="new streams per second")
    p.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    p.add_argument("--offset", type=float, default=0.0, help="delay of this client's schedule (several clients)")
    p.add_argument("--deltas", type=int, default=30)
    p.add_argument("--interval-ms", type=int, default=20)
    p.add_argument("--first-ms", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--tag", default="s")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = uvloop.run(drive(args))
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
