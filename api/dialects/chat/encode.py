"""OpenAI chat completions' answer shapes: completion objects, stream chunks, SSE framing, error events.

Stream chunks are built from a pre-encoded prefix and suffix around the orjson-encoded text,
because this runs once per delta on the hot path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from shared.errors import GatewayError

DONE = b"data: [DONE]\n\n"


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

    def __init__(self, completion_id: str, model: str, created: int | None = None) -> None:
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

    def finish(self, reason: str) -> bytes:
        out = b""
        if not self._role_sent:
            out = self.content("")
        return out + self._base([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])

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
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }
