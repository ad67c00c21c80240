"""Anthropic Messages request bodies as pydantic models (also the schemas of ``/openapi.json``).

Fields Anthropic adds often (``cache_control``, ``citations``, betas such as
``context_management``) are accepted and ignored: every model allows extra fields. What the
gateway does with each declared field is decided in :mod:`api.dialects.messages.parse`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class TextBlock(_Open):
    type: Literal["text"]
    text: str


class Base64Source(_Open):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Open):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(_Open):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


ResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ResultPart] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Open):
    """Reasoning of an earlier answer, sent back in the history: accepted, not sent upstream."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(_Open):
    """A turn; Claude Code also sends ``system`` turns inside ``messages`` (a beta of Anthropic's)."""

    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class Tool(_Open):
    """A client tool (``input_schema``); Anthropic's server tools (a ``type`` and no schema) are ignored."""

    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Open):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: str | None = None  # "omitted": the client does not want the reasoning's text


class CountTokensRequest(_Open):
    """``POST /v1/messages/count_tokens``."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    # Accepted and ignored: the upstream has no such knobs.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None


TYPES_HINT = "'text', 'image', 'tool_use', 'tool_result', 'thinking' and 'redacted_thinking' blocks"
