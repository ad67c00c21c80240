"""OpenAI chat completions' answer shapes: completion objects, stream chunks, SSE framing, error events.

:class:`ChunkEncoder` is the chat dialect's :class:`~api.engine.events.StreamEncoder`. Stream
chunks are built from a pre-encoded prefix and suffix around the orjson-encoded text, because
this runs once per delta on the hot path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from api.engine.events import Answer, FinishReason, Usage
from shared.errors import GatewayError
from shared.messages import ToolCall

DONE = b"data: [DONE]\n\n"
#: Longest piece of a tool call's arguments in one chunk (a whole call is known at once; long
#: arguments still go in pieces, as OpenAI streams them).
ARGUMENTS_PIECE = 1024
PING = b": ping\n\n"


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(exc: GatewayError) -> bytes:
    """The event that ends a stream which failed after it started (the SDK raises on it)."""
    return sse(exc.body())


class ChunkEncoder:
    """Encodes the ``chat.completion.chunk`` events of one stream (one id, created and model)."""

    def __init__(
        self, completion_id: str, model: str, created: int | None = None, *, include_usage: bool = False
    ) -> None:
        self.include_usage = include_usage
        self._tool_calls = 0
        self.id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        head = orjson.dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": self.created, "model": model}
        )
        self._head = b"data: " + head[:-1] + b',"system_fingerprint":null,"choices":[{"index":0,"delta":{'
        self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self._content_head = self._head + b'"content":'
        self._role_sent = False

    def _delta(self, fields: bytes) -> bytes:
        if not self._role_sent:
            self._role_sent = True
            fields = b'"role":"assistant",' + fields
        return self._head + fields + self._tail

    def content(self, text: str) -> bytes:
        if self._role_sent:  # every chunk but the first
            return self._content_head + orjson.dumps(text) + self._tail
        return self._delta(b'"content":' + orjson.dumps(text))

    def reasoning(self, text: str) -> bytes:
        return self._delta(b'"reasoning_content":' + orjson.dumps(text))

    def open(self) -> bytes:
        return b""  # a chat stream has no envelope: its first chunk carries the role

    def ping(self) -> bytes:
        return PING

    def tool_call(self, call: ToolCall) -> bytes:
        """One whole call: the first chunk carries ``index``, ``id``, ``type``, the name and the
        first piece of the arguments; longer arguments follow in pieces of at most
        :data:`ARGUMENTS_PIECE` characters, never an empty one (strict clients break on those)."""
        index = self._tool_calls
        self._tool_calls += 1
        arguments = call["arguments"] or "{}"
        pieces = [arguments[i : i + ARGUMENTS_PIECE] for i in range(0, len(arguments), ARGUMENTS_PIECE)]
        first = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": pieces[0]},
        }
        out = self._delta(b'"tool_calls":' + orjson.dumps([first]))
        for piece in pieces[1:]:
            out += self._delta(b'"tool_calls":' + orjson.dumps([{"index": index, "function": {"arguments": piece}}]))
        return out

    def finish(self, reason: FinishReason, usage: Usage, stop_sequence: str | None = None) -> bytes:
        out = b""
        if not self._role_sent:
            out = self.content("")
        out += self._base([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])
        if self.include_usage:
            out += self.usage(usage.prompt_tokens, usage.completion_tokens)
        return out + DONE

    def error(self, exc: GatewayError) -> bytes:
        return error_event(exc)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._base([], usage=usage(prompt_tokens, completion_tokens))

    def _base(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": choices,
                **extra,
            }
        )


def completion(
    *,
    completion_id: str,
    model: str,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    reasoning: str | None = None,
    tool_calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["content"] = content or None
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def whole(answer: Answer, *, model: str, reasoning: bool) -> dict[str, Any]:
    """The ``chat.completion`` object of a whole answer."""
    return completion(
        completion_id=new_completion_id(),
        model=model,
        content=answer.content,
        finish_reason=answer.finish,
        prompt_tokens=answer.usage.prompt_tokens,
        completion_tokens=answer.usage.completion_tokens,
        reasoning=answer.reasoning if reasoning else None,
        tool_calls=answer.tool_calls,
    )
