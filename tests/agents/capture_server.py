"""A tiny local API that records what real agent clients send, and answers them just enough.

Why it exists: the gateway's Responses and Messages doors must accept exactly what Codex CLI,
Claude Code, the Vercel AI SDK and the SDKs send. This server stands in for OpenAI/Anthropic on
127.0.0.1 so a client can complete one turn while every request it makes is written down
(method, path, headers with secrets masked, JSON body) to a JSON-lines file. The findings are in
docs/agent-clients.md; sample bodies are kept under tests/fixtures/clients/.

Answers, by path (any prefix: ``/v1/responses`` and ``/responses`` alike):

* ``POST …/responses``: a Responses API answer, SSE when ``stream`` is true, else a whole
  ``response`` object.
* ``POST …/messages``: an Anthropic Messages answer, SSE when ``stream`` is true.
* ``POST …/messages/count_tokens``: ``{"input_tokens": <body bytes / 4>}``.
* ``POST …/chat/completions``: a chat completion (SSE when streamed).
* ``GET …/models``: a one-model list (Anthropic's shape when ``anthropic-version`` is sent).
* anything else: 404, recorded too.

The answer is text (``CAPTURE_TEXT``), or one tool call when the request's text contains
``CALLTOOL:<name>:<json arguments>`` on a line and no tool result is in the request yet, so a
client's tool round trip (what it sends back with the tool's output) can be captured too.

Run: ``python tests/agents/capture_server.py --log FILE [--port 0]``; prints ``CAPTURE_READY URL``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CAPTURE_TEXT = "CAPTURED-OK"
SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "proxy-authorization"}
CALL_RE = re.compile(r"CALLTOOL:([A-Za-z0-9_.-]+):(\{.*?\})\s*(?:$|\n|\")", re.M)


def _mask(name: str, value: str) -> str:
    if name.lower() not in SECRET_HEADERS:
        return value
    return value[:12] + "…(masked)" if len(value) > 12 else "(masked)"


def _has_tool_result(body: dict[str, Any]) -> bool:
    text = json.dumps(body)
    return any(m in text for m in ('"function_call_output"', '"tool_result"', '"role": "tool"'))


def _wanted_call(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if _has_tool_result(body):
        return None
    # The instructions/system prompt may quote the marker too; the user's text comes last.
    raw = json.dumps(body).replace("\\n", "\n").replace('\\"', '"')
    found = CALL_RE.findall(raw)
    if not found:
        return None
    name, args = found[-1]
    try:
        return name, json.loads(args)
    except ValueError:
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CaptureServer

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the JSON-lines file is the log
        pass

    def _record(self, body_raw: bytes) -> dict[str, Any]:
        try:
            body: Any = json.loads(body_raw) if body_raw else None
        except ValueError:
            body = {"_raw": body_raw[:2000].decode("utf-8", "replace")}
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {k: _mask(k, v) for k, v in self.headers.items()},
            "body_bytes": len(body_raw),
            "body": body,
        }
        with self.server.lock:
            with open(self.server.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        return body if isinstance(body, dict) else {}

    def _read(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        if n:
            return self.rfile.read(n)
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, frames: list[str]) -> None:
        data = "".join(frames).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._record(b"")
        path = self.path.split("?")[0]
        if path.endswith("/models"):
            if self.headers.get("anthropic-version"):
                m = {"type": "model", "id": "claude-capture", "display_name": "capture"}
                m["created_at"] = "2026-01-01T00:00:00Z"
                self._json(200, {"data": [m], "has_more": False, "first_id": m["id"], "last_id": m["id"]})
            else:
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": "capture-model", "object": "model", "created": 0, "owned_by": "capture"}],
                    },
                )
            return
        self._json(404, {"error": {"message": f"capture server: no route for GET {path}", "type": "not_found"}})

    def do_HEAD(self) -> None:  # noqa: N802
        self._record(b"")
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = self._record(self._read())
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/messages/count_tokens"):
            self._json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
        elif path.endswith("/messages"):
            self._messages(body)
        elif path.endswith("/responses"):
            self._responses(body)
        elif path.endswith("/chat/completions"):
            self._chat(body)
        else:
            self._json(404, {"error": {"message": f"capture server: no route for POST {path}", "type": "not_found"}})

    do_PUT = do_POST  # noqa: N815 - recorded and refused like any unknown POST
    do_DELETE = do_GET  # noqa: N815

    # --- OpenAI Responses ---
    def _responses(self, body: dict[str, Any]) -> None:
        rid = "resp_" + uuid.uuid4().hex
        model = body.get("model", "capture-model")
        call = _wanted_call(body)
        if call:
            item: dict[str, Any] = {
                "type": "function_call",
                "id": "fc_" + uuid.uuid4().hex,
                "call_id": "call_" + uuid.uuid4().hex[:24],
                "name": call[0],
                "arguments": json.dumps(call[1]),
                "status": "completed",
            }
        else:
            item = {
                "type": "message",
                "id": "msg_" + uuid.uuid4().hex,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": CAPTURE_TEXT, "annotations": []}],
            }
        usage = {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 13,
        }
        base = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "output": [],
            "status": "in_progress",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "usage": None,
            "temperature": None,
            "top_p": None,
            "text": {"format": {"type": "text"}},
        }
        done = dict(base, status="completed", output=[item], usage=usage)
        if not body.get("stream"):
            self._json(200, done)
            return
        seq = iter(range(1000))

        def ev(kind: str, **data: Any) -> str:
            return f"event: {kind}\ndata: {json.dumps(dict(type=kind, sequence_number=next(seq), **data))}\n\n"

        frames = [ev("response.created", response=base), ev("response.in_progress", response=base)]
        if call:
            start = dict(item, arguments="", status="in_progress")
            frames += [
                ev("response.output_item.added", output_index=0, item=start),
                ev(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=0,
                    delta=item["arguments"],
                ),
                ev(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=0,
                    arguments=item["arguments"],
                ),
                ev("response.output_item.done", output_index=0, item=item),
            ]
        else:
            start = dict(item, content=[], status="in_progress")
            part = {"type": "output_text", "text": "", "annotations": []}
            frames += [
                ev("response.output_item.added", output_index=0, item=start),
                ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part),
                ev(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    delta=CAPTURE_TEXT,
                    logprobs=[],
                ),
                ev(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    text=CAPTURE_TEXT,
                    logprobs=[],
                ),
                ev(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    part=dict(part, text=CAPTURE_TEXT),
                ),
                ev("response.output_item.done", output_index=0, item=item),
            ]
        frames.append(ev("response.completed", response=done))
        self._sse(frames)

    # --- Anthropic Messages ---
    def _messages(self, body: dict[str, Any]) -> None:
        mid = "msg_" + uuid.uuid4().hex[:24]
        model = body.get("model", "claude-capture")
        call = _wanted_call(body)
        if call:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_" + uuid.uuid4().hex[:24],
                "name": call[0],
                "input": call[1],
            }
            stop = "tool_use"
        else:
            block = {"type": "text", "text": CAPTURE_TEXT}
            stop = "end_turn"
        usage = {"input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        msg = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            self._json(200, msg)
            return

        def ev(kind: str, **data: Any) -> str:
            return f"event: {kind}\ndata: {json.dumps(dict(type=kind, **data))}\n\n"

        start_msg = dict(msg, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
        frames = [ev("message_start", message=start_msg)]
        if call:
            frames += [
                ev("content_block_start", index=0, content_block=dict(block, input={})),
                ev(
                    "content_block_delta",
                    index=0,
                    delta={"type": "input_json_delta", "partial_json": json.dumps(call[1])},
                ),
            ]
        else:
            frames += [
                ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                ev("ping"),
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": CAPTURE_TEXT}),
            ]
        frames += [
            ev("content_block_stop", index=0),
            ev("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage={"output_tokens": 3}),
            ev("message_stop"),
        ]
        self._sse(frames)

    # --- OpenAI chat completions (some clients fall back to it) ---
    def _chat(self, body: dict[str, Any]) -> None:
        cid = "chatcmpl-" + uuid.uuid4().hex
        model = body.get("model", "capture-model")
        base = {"id": cid, "created": int(time.time()), "model": model}
        if not body.get("stream"):
            self._json(
                200,
                dict(
                    base,
                    object="chat.completion",
                    choices=[
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": CAPTURE_TEXT}}
                    ],
                    usage={"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
                ),
            )
            return
        chunks = [
            {"index": 0, "delta": {"role": "assistant", "content": CAPTURE_TEXT}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        ]
        frames = [f"data: {json.dumps(dict(base, object='chat.completion.chunk', choices=[c]))}\n\n" for c in chunks]
        self._sse(frames + ["data: [DONE]\n\n"])


class CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], log_path: str) -> None:
        super().__init__(addr, Handler)
        self.log_path = log_path
        self.lock = threading.Lock()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True, help="JSON-lines file the requests are appended to")
    args = ap.parse_args()
    srv = CaptureServer((args.host, args.port), args.log)
    print(f"CAPTURE_READY http://{args.host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
