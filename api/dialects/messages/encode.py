"""Anthropic Messages answers: the ``message`` object, and the stream's ``event:`` + ``data:`` pairs.

A stream goes ``message_start``; per content block ``content_block_start``, its
``content_block_delta`` s (``thinking_delta``, ``text_delta``, ``input_json_delta``) and
``content_block_stop``; then ``message_delta`` (stop reason, usage) and ``message_stop``.
``ping`` keeps a silent stream alive and ``error`` ends a stream that failed after it started.

The per-delta path builds no dict: each open block has its delta event pre-encoded up to the
text, so a delta is one ``orjson.dumps`` of the text between two byte strings.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson

from api.dialects.messages.errors import error_body
from api.engine.events import Answer, FinishReason, Usage
from shared.errors import GatewayError
from shared.messages import ToolCall

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_DELTA_TAIL = b"}}\n\n"

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def tool_use_id(call_id: str) -> str:
    """Anthropic's ``toolu_…`` form of an engine call id (the same id every time)."""
    if call_id.startswith("toolu_"):
        return call_id
    return "toolu_" + call_id.removeprefix("call_")


def stop_reason(reason: FinishReason, stop_sequence: str | None) -> StopReason:
    if reason == "length":
        return "max_tokens"
    if reason == "tool_calls":
        return "tool_use"
    return "stop_sequence" if stop_sequence is not None else "end_turn"


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        value = orjson.loads(call["arguments"] or "{}")
    except orjson.JSONDecodeError:
        value = {}
    return {
        "type": "tool_use",
        "id": tool_use_id(call["id"]),
        "name": call["name"],
        "input": value if isinstance(value, dict) else {},
    }


def message(answer: Answer, *, message_id: str, model: str, thinking: bool) -> dict[str, Any]:
    """The ``message`` object of a whole answer."""
    content: list[dict[str, Any]] = []
    if thinking and answer.reasoning:
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
    if answer.content:
        content.append({"type": "text", "text": answer.content})
    content.extend(_tool_use(c) for c in answer.tool_calls)
    if not content:  # an empty answer is one empty text block: clients read the first block
        content.append({"type": "text", "text": ""})
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(answer.finish, answer.stop_sequence),
        "stop_sequence": answer.stop_sequence,
        "usage": _usage(answer.usage),
    }


class MessageStreamEncoder:
    """Encodes one streamed answer as Anthropic's events (a :class:`~api.engine.events.StreamEncoder`)."""

    def __init__(self, message_id: str, model: str, input_tokens: int, *, thinking: bool) -> None:
        self.id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self.thinking = thinking
        self._index = -1  # the index of the last block started
        self._open: Literal["text", "thinking", "tool_use"] | None = None
        self._text_head = b""  # the open text block's delta event, up to the text

    def open(self) -> bytes:
        start: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(Usage(self.input_tokens, 0)),
        }
        return event("message_start", {"type": "message_start", "message": start})

    def _start(self, kind: Literal["text", "thinking"]) -> bytes:
        out = self._stop()
        self._index += 1
        self._open = kind
        block: dict[str, Any] = {"type": "text", "text": ""}
        if kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        delta_type = b'"text_delta","text":' if kind == "text" else b'"thinking_delta","thinking":'
        self._text_head = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(self._index).encode()
            + b',"delta":{"type":'
            + delta_type
        )
        return out + event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def content(self, text: str) -> bytes:
        if self._open == "text":  # every delta but a block's first
            return self._text_head + orjson.dumps(text) + _DELTA_TAIL
        return self._start("text") + self._text_head + orjson.dumps(text) + _DELTA_TAIL

    def reasoning(self, text: str) -> bytes:
        if not self.thinking:
            return b""
        if self._open == "thinking":
            return self._text_head + orjson.dumps(text) + _DELTA_TAIL
        return self._start("thinking") + self._text_head + orjson.dumps(text) + _DELTA_TAIL

    def tool_call(self, call: ToolCall) -> bytes:
        """One whole call as one ``tool_use`` block: start (empty input), the arguments, stop."""
        out = self._stop()
        self._index += 1
        block = {"type": "tool_use", "id": tool_use_id(call["id"]), "name": call["name"], "input": {}}
        out += event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )
        if call["arguments"]:  # an empty input_json_delta breaks clients: none is sent for no arguments
            delta = {"type": "input_json_delta", "partial_json": call["arguments"]}
            out += event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
        return out + event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def finish(self, reason: FinishReason, usage: Usage, stop_sequence: str | None = None) -> bytes:
        delta = {"stop_reason": stop_reason(reason, stop_sequence), "stop_sequence": stop_sequence}
        empty = b""
        if self._index < 0:  # nothing was said: one empty text block, as for a whole answer
            empty = self._start("text")
        return (
            empty
            + self._stop()
            + event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.completion_tokens}},
            )
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    def error(self, exc: GatewayError) -> bytes:
        return event("error", error_body(exc))

    def ping(self) -> bytes:
        return PING
