"""Responses API answers: the ``response`` object, and the stream's typed events.

A stream is ``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` … ``response.output_item.done`` (a ``reasoning`` item with
``response.reasoning_text.delta`` s; a ``message`` with its ``output_text`` part and
``response.output_text.delta`` s; a ``function_call`` with
``response.function_call_arguments.delta`` / ``.done``), and exactly one terminal event:
``response.completed``, ``response.incomplete`` (the token limit cut it) or ``response.failed``
(an error after the start). Every event carries a ``sequence_number`` rising from 0; there is
no ``[DONE]``.

The per-delta path builds no dict: the open item's delta event is pre-encoded up to the text,
and the sequence number is the only other thing written per delta.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import orjson

from api.engine.events import Answer, FinishReason, Usage
from shared.errors import GatewayError
from shared.messages import ToolCall

PING = b": ping\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(value: Usage) -> dict[str, Any]:
    return {
        "input_tokens": value.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": value.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": value.total_tokens,
    }


def envelope(*, response_id: str, model: str, echo: dict[str, Any]) -> dict[str, Any]:
    """A ``response`` object in progress: the request's settings echoed, no output yet."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "usage": None,
        **echo,
    }


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def _reasoning(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def _function_call(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call["id"],
        "name": call["name"],
        "arguments": call["arguments"],
    }


def _finished(response: dict[str, Any], reason: FinishReason, used: Usage) -> dict[str, Any]:
    response["usage"] = usage(used)
    if reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"
    return response


def whole(answer: Answer, response: dict[str, Any], *, reasoning: bool) -> dict[str, Any]:
    """The finished ``response`` object of a whole answer (``response`` is its envelope)."""
    output: list[dict[str, Any]] = []
    if reasoning and answer.reasoning:
        output.append(_reasoning(new_id("rs"), answer.reasoning))
    if answer.content or not answer.tool_calls:
        status = "incomplete" if answer.finish == "length" else "completed"
        output.append(_message(new_id("msg"), answer.content, status))
    output.extend(_function_call(new_id("fc"), c, "completed") for c in answer.tool_calls)
    response["output"] = output
    return _finished(response, answer.finish, answer.usage)


def failed(response: dict[str, Any], exc: GatewayError) -> dict[str, Any]:
    response["status"] = "failed"
    response["error"] = {"code": exc.code or exc.type, "message": exc.message}
    return response


class ResponseStreamEncoder:
    """Encodes one streamed answer as typed Responses events (a :class:`~api.engine.events.StreamEncoder`).

    When the stream has ended, :attr:`final` is the finished ``response`` object (for the store).
    """

    def __init__(self, response: dict[str, Any], *, reasoning: bool) -> None:
        self.response = response
        self.reasoning_shown = reasoning
        self.final: dict[str, Any] | None = None
        self.text = ""  # the answer's text, once its message item is closed
        self.calls: list[ToolCall] = []
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._open: Literal["message", "reasoning"] | None = None
        self._item_id = ""
        self._parts: list[str] = []
        self._delta_head = b""

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, **data, "sequence_number": self._seq}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def open(self) -> bytes:
        created = self._event("response.created", {"response": self.response})
        return created + self._event("response.in_progress", {"response": self.response})

    def _start(self, kind: Literal["message", "reasoning"]) -> bytes:
        out = self._close()
        self._open = kind
        self._parts = []
        index = len(self._output)
        if kind == "message":
            self._item_id = new_id("msg")
            item: dict[str, Any] = {
                "id": self._item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            delta_kind = b"response.output_text.delta"
        else:
            self._item_id = new_id("rs")
            item = {"id": self._item_id, "type": "reasoning", "summary": []}
            delta_kind = b"response.reasoning_text.delta"
        out += self._event("response.output_item.added", {"output_index": index, "item": item})
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            where = {"item_id": self._item_id, "output_index": index, "content_index": 0}
            out += self._event("response.content_part.added", {**where, "part": part})
        self._delta_head = (
            b"event: "
            + delta_kind
            + b'\ndata: {"type":"'
            + delta_kind
            + b'","item_id":"'
            + self._item_id.encode()
            + b'","output_index":'
            + str(index).encode()
            + (b',"content_index":0,"logprobs":[],"delta":' if kind == "message" else b',"content_index":0,"delta":')
        )
        return out

    def _delta(self, text: str) -> bytes:
        self._parts.append(text)
        seq = self._seq
        self._seq += 1
        return self._delta_head + orjson.dumps(text) + b',"sequence_number":' + str(seq).encode() + b"}\n\n"

    def _close(self, status: str = "completed") -> bytes:
        kind = self._open
        if kind is None:
            return b""
        self._open = None
        text = "".join(self._parts)
        index = len(self._output)
        where = {"item_id": self._item_id, "output_index": index, "content_index": 0}
        if kind == "message":
            self.text += text
            item = _message(self._item_id, text, status)
            out = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**where, "part": item["content"][0]})
        else:
            item = _reasoning(self._item_id, text)
            out = self._event("response.reasoning_text.done", {**where, "text": text})
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def content(self, text: str) -> bytes:
        if self._open == "message":  # every delta but an item's first
            return self._delta(text)
        return self._start("message") + self._delta(text)

    def reasoning(self, text: str) -> bytes:
        if not self.reasoning_shown:
            return b""
        if self._open == "reasoning":
            return self._delta(text)
        return self._start("reasoning") + self._delta(text)

    def tool_call(self, call: ToolCall) -> bytes:
        """One whole call as one ``function_call`` item: added, its arguments, done."""
        out = self._close()
        self.calls.append(call)
        index = len(self._output)
        item_id = new_id("fc")
        out += self._event(
            "response.output_item.added",
            {"output_index": index, "item": {**_function_call(item_id, call, "in_progress"), "arguments": ""}},
        )
        if call["arguments"]:  # never an empty delta
            out += self._event(
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": index, "delta": call["arguments"]},
            )
        out += self._event(
            "response.function_call_arguments.done",
            {"item_id": item_id, "output_index": index, "name": call["name"], "arguments": call["arguments"]},
        )
        item = _function_call(item_id, call, "completed")
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def finish(self, reason: FinishReason, used: Usage, stop_sequence: str | None = None) -> bytes:
        out = self._close("incomplete" if reason == "length" else "completed")
        if not self._output:  # an empty answer is still one (empty) message, as OpenAI sends it
            out += self._start("message") + self._close()
        self.response["output"] = self._output
        self.final = _finished(self.response, reason, used)
        kind = "response.incomplete" if self.final["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": self.final})

    def error(self, exc: GatewayError) -> bytes:
        out = self._close("incomplete")
        self.response["output"] = self._output
        self.final = failed(self.response, exc)
        return out + self._event("response.failed", {"response": self.final})

    def ping(self) -> bytes:
        return PING
