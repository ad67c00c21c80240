"""A local OpenAI-compatible chat-completions server (vLLM, Ollama, a paid provider), failures included.

``POST /v1/chat/completions`` with ``stream: true`` answers server-sent events of
``chat.completion.chunk`` objects ending with ``data: [DONE]``, as OpenAI's API does:
content pieces, ``reasoning_content`` pieces, tool calls split over several chunks by
``index``, and a last chunk with ``finish_reason``. ``stream: false`` answers one
``chat.completion``.

Behaviour is chosen per request by a directive in any message's text, so concurrent tests share
nothing: ``@@oai@@ {json}`` on a line (the last one wins). Fields:

* ``reply`` (list of str): the content pieces; default ``Hi from <model>: <last 40 characters
  of the last user message's last non-directive line>`` in three pieces.
* ``reasoning`` (list of str): reasoning pieces sent (as ``reasoning_content``) before the reply.
* ``tool_calls`` (list of ``{"name", "arguments"}``): tool calls instead of a reply, each split
  into three chunks; ``finish_reason`` is then ``tool_calls``.
* ``fail`` (mode), ``only`` (a model name: fail only for it): ``429`` (``Retry-After`` from
  ``retry_after``, default 1), ``500``, ``503``, ``400``, ``401``, ``html`` (200 with a web
  page), ``cut`` (``after`` chunks, default 2, then the TCP connection is cut), ``truncate``
  (``after`` chunks, then a clean end of body with neither a finish reason nor ``[DONE]``),
  ``hang`` (``after`` chunks, then silence for ``hang_ms``, default 60000, then the rest).
* ``interval_ms`` (default 5) between chunks.

``GET /_sim/log`` lists every request (model, messages, tools, tool_choice, response_format,
the Authorization header and ``x-*`` headers received, outcome); ``POST /_sim/reset`` clears it.
Run ``python -m tests.openai_sim --port 0``: prints ``SIM_READY URL`` (the URL ends in ``/v1``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.decopy_sim import SimServer, cut_connection

MARKER = "@@oai@@ "
_DIRECTIVE = re.compile(r"@@oai@@ (\{.*)$", re.MULTILINE)


class State:
    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.connections: Callable[[], Any] | None = None


def _texts(messages: list[Any]) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return out


def directive(messages: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for text in _texts(messages):
        for match in _DIRECTIVE.finditer(text):
            try:
                value = json.loads(match.group(1))
            except ValueError:
                continue
            if isinstance(value, dict):
                found = value
    return found


def _default_reply(model: str, messages: list[Any]) -> list[str]:
    last = ""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            lines = [
                ln
                for t in _texts([m])
                for ln in t.splitlines()
                if ln.strip() and MARKER not in ln and "@@sim@@" not in ln
            ]
            last = lines[-1] if lines else last
    text = f"Hi from {model}: {last[-40:]}"
    third = max(1, len(text) // 3)
    return [text[:third], text[third : 2 * third], text[2 * third :]]


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def frames(model: str, d: dict[str, Any], messages: list[Any]) -> list[bytes]:
    cid = "chatcmpl-" + uuid.uuid4().hex[:12]
    out = [_chunk(cid, model, {"role": "assistant", "content": ""})]
    for piece in d.get("reasoning") or []:
        out.append(_chunk(cid, model, {"reasoning_content": piece}))
    calls = d.get("tool_calls") or []
    if calls:
        for i, call in enumerate(calls):
            args = call.get("arguments", "{}")
            args = args if isinstance(args, str) else json.dumps(args)
            half = len(args) // 2
            out.append(
                _chunk(
                    cid,
                    model,
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": f"call_{i}_{cid[-6:]}",
                                "type": "function",
                                "function": {"name": call["name"], "arguments": ""},
                            }
                        ]
                    },
                )
            )
            out.append(_chunk(cid, model, {"tool_calls": [{"index": i, "function": {"arguments": args[:half]}}]}))
            out.append(_chunk(cid, model, {"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]}))
        out.append(_chunk(cid, model, {}, "tool_calls"))
    else:
        for piece in d.get("reply") or _default_reply(model, messages):
            out.append(_chunk(cid, model, {"content": piece}))
        out.append(_chunk(cid, model, {}, "stop"))
    return out


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message["type"] == "http.request" and message.get("more_body", False)
    return b"".join(chunks)


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def completions(scope: Scope, receive: Receive, send: Send) -> None:
    state: State = scope["app"].state.sim
    headers = Headers(scope=scope)
    try:
        req = orjson.loads(await _body(receive))
    except orjson.JSONDecodeError:
        return await _json(send, 400, {"error": {"message": "not JSON", "type": "invalid_request_error"}})
    model = str(req.get("model", ""))
    messages = req.get("messages") or []
    entry: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "tools": req.get("tools"),
        "tool_choice": req.get("tool_choice"),
        "parallel_tool_calls": req.get("parallel_tool_calls"),
        "response_format": req.get("response_format"),
        "stream": req.get("stream"),
        "authorization": headers.get("authorization"),
        "x_headers": {k: v for k, v in headers.items() if k.startswith("x-")},
        "outcome": "running",
    }
    state.log.append(entry)
    d = directive(messages)
    mode = d.get("fail")
    if mode and d.get("only") not in (None, model):
        mode = None
    canned = {
        "429": (429, [(b"retry-after", str(d.get("retry_after", 1)).encode())]),
        "500": (500, []),
        "503": (503, []),
        "400": (400, []),
        "401": (401, []),
    }
    if mode in canned:
        status, extra = canned[mode]
        entry["outcome"] = f"failed:{mode}"
        return await _json(send, status, {"error": {"message": f"simulated {mode}", "type": "sim_error"}}, extra)
    if mode == "html":
        entry["outcome"] = "failed:html"
        page = b"<html><body>Bad gateway</body></html>"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        return await send({"type": "http.response.body", "body": page})
    chunks = frames(model, d, messages)
    if not req.get("stream"):
        text = "".join(orjson.loads(c[6:]).get("choices")[0]["delta"].get("content") or "" for c in chunks)
        entry["outcome"] = "ok"
        return await _json(
            send,
            200,
            {
                "id": "chatcmpl-x",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            },
        )
    interval = float(d.get("interval_ms", 5)) / 1000
    after = int(d.get("after", 2))
    stop = min(after, len(chunks)) if mode in ("cut", "truncate") else len(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    for i in range(stop):
        if mode == "hang" and i == int(d.get("after", 2)):
            entry["outcome"] = "hanging"
            await asyncio.sleep(float(d.get("hang_ms", 60000)) / 1000)
        if interval:
            await asyncio.sleep(interval)
        await send({"type": "http.response.body", "body": chunks[i], "more_body": True})
    if mode == "cut":
        entry["outcome"] = "failed:cut"
        cut_connection(scope)
        return
    if mode == "truncate":
        entry["outcome"] = "failed:truncate"
        return await send({"type": "http.response.body", "body": b""})
    entry["outcome"] = "ok"
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


class _Raw:
    def __init__(self, handler: Callable[[Scope, Receive, Send], Any]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


async def sim_log(request: Request) -> Response:
    return Response(orjson.dumps(request.app.state.sim.log), media_type="application/json")


async def sim_reset(request: Request) -> Response:
    request.app.state.sim.log.clear()
    return Response(b'{"ok":true}', media_type="application/json")


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _Raw(completions), methods=["POST"]),
            Route("/_sim/log", sim_log),
            Route("/_sim/reset", sim_reset, methods=["POST"]),
        ]
    )
    app.state.sim = State()
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible chat-completions simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    app = create_app()
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = SimServer(config, f"http://{host}:{port}/v1")
    app.state.sim.connections = lambda: server.server_state.connections
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
