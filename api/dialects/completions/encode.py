"""Legacy completions' answers: ``text_completion`` objects, whole or as ``data:`` chunks ended by ``[DONE]``.

As for chat, a chunk is a pre-encoded prefix and suffix around the orjson-encoded text. The
answer's reasoning (a reasoning model's ``<think>`` part) is not part of a completion's text
and is left out; tool calls cannot occur (the request offers none).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from api.dialects.chat.encode import DONE, PING, error_event, sse, usage
from api.engine.events import Answer, FinishReason, Usage
from shared.errors import GatewayError
from shared.messages import ToolCall


def new_completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex


def _choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def whole(answer: Answer, *, model: str) -> dict[str, Any]:
    return {
        "id": new_completion_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [_choice(answer.content, "length" if answer.finish == "length" else "stop")],
        "usage": usage(answer.usage.prompt_tokens, answer.usage.completion_tokens),
    }


class CompletionChunkEncoder:
    """Encodes one streamed completion (a :class:`~api.engine.events.StreamEncoder`)."""

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.id = new_completion_id()
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        head = orjson.dumps({"id": self.id, "object": "text_completion", "created": self.created, "model": model})
        self._head = b"data: " + head[:-1] + b',"choices":[{"text":'
        self._tail = b',"index":0,"logprobs":null,"finish_reason":null}]}\n\n'

    def _base(self, **fields: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, **fields}

    def open(self) -> bytes:
        return b""

    def content(self, text: str) -> bytes:
        return self._head + orjson.dumps(text) + self._tail

    def reasoning(self, text: str) -> bytes:
        return b""  # a completion is the answer's text only

    def tool_call(self, call: ToolCall) -> bytes:
        return b""  # no tools are offered in this dialect

    def finish(self, reason: FinishReason, used: Usage, stop_sequence: str | None = None) -> bytes:
        out = sse(self._base(choices=[_choice("", "length" if reason == "length" else "stop")]))
        if self.include_usage:
            out += sse(self._base(choices=[], usage=usage(used.prompt_tokens, used.completion_tokens)))
        return out + DONE

    def error(self, exc: GatewayError) -> bytes:
        return error_event(exc)

    def ping(self) -> bytes:
        return PING
