"""The message format on a job's pub/sub channel.

Each message is one JSON object (orjson) with a per-job sequence number ``seq`` that starts at 0
and rises by one, so the API can tell a lost or duplicated message, and a ``kind``:

- ``start``  the worker took the job (ends the queue wait);
- ``delta``  ``text``: the next piece(s) of the answer's text, in order (for a reasoning model
  on decopy it may open with ``<think>…</think>``: the API splits it, see ``api.engine.shaping``);
- ``reasoning`` ``text``: the next piece of reasoning, from an upstream that marks it itself;
- ``tool_call`` ``call``: one whole, validated tool call (:class:`ToolCall`), in order;
- ``alive``  nothing new, but the worker is still on it (sent while the upstream is silent);
- ``done``   ``finish_reason`` (``stop``, ``length`` or ``tool_calls``): the answer is complete
  (terminal);
- ``error``  ``error``: a :meth:`shared.errors.GatewayError.to_wire` dict (terminal).

The first message carrying a piece of the answer (or ``done``, for an empty answer) also says
which target serves it: ``upstream`` (``upstream/model``, see ``shared.routing``).

Every job ends with exactly one terminal message.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import orjson

Kind = Literal["start", "delta", "reasoning", "tool_call", "alive", "done", "error"]


class ToolCall(TypedDict):
    """One call of a tool by the model: ``arguments`` is the JSON text of an object."""

    id: str
    name: str
    arguments: str


class Message(TypedDict, total=False):
    seq: int
    kind: Kind
    text: str
    call: ToolCall
    finish_reason: str
    error: dict[str, Any]
    worker: str
    upstream: str


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


Role = Literal["system", "user", "assistant", "tool"]


class Turn(TypedDict, total=False):
    """One turn of the conversation, the same whichever dialect the client spoke.

    ``text`` is the turn's text (parts joined); an assistant turn may carry the ``tool_calls``
    it made; a ``tool`` turn is the result of the call ``tool_call_id`` (``is_error`` when the
    tool failed). ``name`` is the speaker's name where the client gave one.
    """

    role: Role
    text: str
    name: str
    tool_calls: list[ToolCall]
    tool_call_id: str
    is_error: bool


class ToolSpec(TypedDict):
    """A function the model may call: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]


#: ``auto`` (the model decides), ``none`` (no tools offered), ``required`` (at least one call),
#: or ``{"name": …}``: that one tool, required.
ToolChoice = Literal["auto", "none", "required"] | dict[str, str]


class OutputFormat(TypedDict):
    """The answer's format: ``text``, any JSON object, or JSON valid against ``schema``."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None
    schema: dict[str, Any] | None
    strict: bool


class ChatJob(TypedDict):
    """What the API hands a worker (the arq job's one argument).

    ``prompt`` is the whole conversation folded into one text (tools and output format
    included, see ``api.engine.fold``) for upstreams that take one text, such as decopy.
    ``turns``, ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``output`` are the same
    request, structured: for upstreams that take them natively, and for the worker's reading of
    an emulated answer (tool calls, JSON output); a job without them has no tools and no
    output format.
    """

    request_id: str
    model: str
    upstream_model: str
    prompt: str
    image: Image | None
    turns: NotRequired[list[Turn]]
    tools: NotRequired[list[ToolSpec]]
    tool_choice: NotRequired[ToolChoice]
    parallel_tool_calls: NotRequired[bool]
    output: NotRequired[OutputFormat | None]
