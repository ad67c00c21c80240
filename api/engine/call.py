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
from shared.errors import InvalidRequest, Unsupported
from shared.messages import ChatJob, Image, OutputFormat, ToolChoice, ToolSpec, Turn
from shared.settings import Settings
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

    @property
    def emulated(self) -> bool:
        """Tools or a JSON output format: the gateway emulates them (see shared.tools)."""
        return bool(self.tools) or (self.output is not None and self.output["type"] != "text")


def finish_call(call: ChatCall, *, param: str = "messages", settings: Settings | None = None) -> ChatCall:
    """Fold the conversation into the prompt and check there is something to send.

    ``settings`` gives the tool instruction (``TOOLS_INSTRUCTION``) and the checks of
    :func:`check_emulation`; without them the default instruction is folded and the checks
    are left to the service (which makes them for every dialect).
    """
    if call.emulated and settings is not None:
        check_emulation(call, settings, fold_checked=False)
    instruction = settings.tools_instruction if settings is not None else Settings.tools_instruction
    call.prompt = fold(
        call.turns,
        tools=call.tools,
        tool_choice=call.tool_choice,
        parallel_tool_calls=call.parallel_tool_calls,
        output=call.output,
        instruction=instruction,
    )
    if not call.prompt.strip() and call.image is None and call.image_url is None:
        raise InvalidRequest("The conversation has no text to send.", param=param, code="empty_conversation")
    call.prompt_tokens = estimate_tokens(call.prompt)
    if call.emulated and settings is not None:
        check_emulation(call, settings)
    return call


def check_emulation(call: ChatCall, settings: Settings, *, fold_checked: bool = True) -> None:
    """Refuse tools and JSON output when ``TOOLS_EMULATION`` is off, and a folded prompt over
    ``TOOLS_PROMPT_MAX_CHARS`` (once folded), each with a 400 that says so."""
    if not call.emulated:
        return
    if not settings.tools_emulation:
        param = "tools" if call.tools else "response_format"
        raise Unsupported(
            f"'{param}' is not supported: the upstream has no tool calling or JSON mode, and its "
            "emulation is turned off on this gateway (TOOLS_EMULATION).",
            param=param,
        )
    if fold_checked and len(call.prompt) > settings.tools_prompt_max_chars:
        raise InvalidRequest(
            f"The prompt with the tools folded in is {len(call.prompt)} characters, over this gateway's "
            f"limit of {settings.tools_prompt_max_chars} (TOOLS_PROMPT_MAX_CHARS): offer fewer tools or "
            "shorter schemas, or shorten the conversation.",
            param="tools" if call.tools else "messages",
            code="prompt_too_large",
        )
