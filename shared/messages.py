"""The message format on a job's pub/sub channel.

Each message is one JSON object (orjson) with a per-job sequence number ``seq`` that starts at 0
and rises by one, so the API can tell a lost or duplicated message, and a ``kind``:

- ``start``  the worker took the job (ends the queue wait);
- ``delta``  ``text``: the next piece(s) of the answer, in order;
- ``alive``  nothing new, but the worker is still on it (sent while the upstream is silent);
- ``done``   ``finish_reason``: the answer is complete (terminal);
- ``error``  ``error``: a :meth:`shared.errors.GatewayError.to_wire` dict (terminal).

Every job ends with exactly one terminal message.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import orjson

Kind = Literal["start", "delta", "alive", "done", "error"]


class Message(TypedDict, total=False):
    seq: int
    kind: Kind
    text: str
    finish_reason: str
    error: dict[str, Any]
    worker: str


def encode(message: Message) -> bytes:
    return orjson.dumps(message)


def decode(raw: bytes | str) -> Message:
    value = orjson.loads(raw)
    if not isinstance(value, dict) or "seq" not in value or "kind" not in value:
        raise ValueError(f"not a channel message: {raw!r:.200}")
    return value  # type: ignore[return-value]


class Image(TypedDict):
    data: bytes
    content_type: str
    extension: str


class ChatJob(TypedDict):
    """What the API hands a worker (the arq job's one argument)."""

    request_id: str
    model: str
    upstream_model: str
    prompt: str
    image: Image | None
