"""The engine's one chat request: what every dialect's parser produces, whatever its wire format.

A dialect (``api.dialects.<name>.parse``) validates its own body and builds a :class:`ChatCall`
from the conversation's :class:`~shared.messages.Turn` list, the tools offered, the output
format and the limits; :func:`finish_call` then folds it into the upstream's one prompt
(:mod:`api.engine.fold`) and checks what every dialect checks alike. From there on nothing
depends on the dialect but the encoding of the answer (:mod:`api.engine.events`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.engine.fold import fold
from shared.errors import InvalidRequest
from shared.messages import ChatJob, Image, OutputFormat, ToolChoice, ToolSpec, Turn
from shared.tokens import estimate_tokens

#: The dialects, also the ``dialect`` label of the metrics and the access log.
DIALECTS = ("chat", "responses", "messages", "completions")


@dataclass
class ChatCall:
    """One validated chat request, ready to become a job."""

    model: str
    upstream_model: str
    turns: list[Turn]
    stream: bool
    dialect: str = "chat"
    image: Image | None = None
    image_url: str | None = None  # an http(s) image still to fetch (see api.engine.image_fetch)
    image_param: str | None = None  # where the client put it, for errors
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    output: OutputFormat | None = None
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    reasoning: bool = False  # split a leading <think>…</think> off (see api.engine.shaping)
    #: Filled by :func:`finish_call`: the folded prompt and its estimated tokens.
    prompt: str = ""
    prompt_tokens: int = 0

    def job(self, request_id: str) -> ChatJob:
        """The job a worker runs for this call."""
        job: ChatJob = {
            "request_id": request_id,
            "model": self.model,
            "upstream_model": self.upstream_model,
            "prompt": self.prompt,
            "image": self.image,
        }
        if self.tools or self.output is not None:
            job["turns"] = self.turns
            job["tools"] = self.tools
            job["tool_choice"] = self.tool_choice
            job["parallel_tool_calls"] = self.parallel_tool_calls
            job["output"] = self.output
        return job


def finish_call(call: ChatCall, *, param: str = "messages") -> ChatCall:
    """Fold the conversation into the prompt and check there is something to send."""
    call.prompt = fold(call.turns)
    if not call.prompt.strip() and call.image is None and call.image_url is None:
        raise InvalidRequest("The conversation has no text to send.", param=param, code="empty_conversation")
    call.prompt_tokens = estimate_tokens(call.prompt)
    return call
