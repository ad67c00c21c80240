"""The engine's one stream of answer events, and what a dialect implements to encode it.

The engine (:mod:`api.engine.service`) reads a job's messages, shapes them (reasoning, stop
sequences, token limit) and hands a dialect's :class:`StreamEncoder` one call per event, in
order: ``content`` and ``reasoning`` text, whole ``tool_call`` s, then exactly one ``finish``
or one ``error``. For an answer asked for whole, it collects the same events into one
:class:`Answer` and asks the dialect to render it. A dialect never sees Redis, the queue or a
job's raw messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from starlette.responses import Response

from shared.errors import GatewayError
from shared.messages import ToolCall

if TYPE_CHECKING:
    from api.engine.call import ChatCall

#: ``stop`` (the answer ended, or met a stop sequence), ``length`` (the token limit cut it),
#: ``tool_calls`` (it ended with one or more tool calls).
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Estimated tokens (decopy reports none; see :mod:`shared.tokens`)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Answer:
    """A whole answer: text, reasoning, tool calls, why it ended and what it cost."""

    content: str
    reasoning: str
    finish: FinishReason
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: The stop sequence that ended it, where one did (Anthropic reports it).
    stop_sequence: str | None = None


class StreamEncoder(Protocol):
    """Encodes one streamed answer into a dialect's wire events (bytes ready for the socket).

    ``open`` is sent first, before any text: a dialect whose stream starts with an envelope
    (Anthropic's ``message_start``, the Responses API's ``response.created``) returns it there;
    chat completions returns ``b""``. ``ping`` is what keeps the connection alive while the
    upstream is silent.
    """

    def open(self) -> bytes: ...

    def content(self, text: str) -> bytes: ...

    def reasoning(self, text: str) -> bytes: ...

    def tool_call(self, call: ToolCall) -> bytes: ...

    def finish(self, reason: FinishReason, usage: Usage, stop_sequence: str | None = None) -> bytes: ...

    def error(self, exc: GatewayError) -> bytes: ...

    def ping(self) -> bytes: ...


class Dialect(Protocol):
    """What the engine needs from a dialect once the request is parsed."""

    #: ``chat``, ``responses``, ``messages`` or ``completions`` (see ``api.engine.call.DIALECTS``).
    name: str

    def stream_encoder(self, call: ChatCall) -> StreamEncoder: ...

    def whole(self, call: ChatCall, answer: Answer, headers: dict[str, str]) -> Response: ...

    def error_response(self, exc: GatewayError) -> Response: ...
