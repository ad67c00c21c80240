"""Request bodies the gateway accepts, as pydantic models.

pydantic validates the body and also gives the JSON schema served in ``/openapi.json``.
Fields the upstream cannot honour are declared here so the OpenAPI document names them; what
the gateway does with each is decided in :mod:`api.dialects.chat.parse`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    """OpenAI adds fields often; unknown ones are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Open):
    name: str = Field(min_length=1)
    arguments: str = ""


class MessageToolCall(_Open):
    """A call an assistant message made earlier in the conversation."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Open):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Open):
    """A tool the model may call: only ``function`` tools exist on this gateway."""

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Open):
    name: str = Field(min_length=1)


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Open):
    include_usage: bool | None = None


class JSONSchemaFormat(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(_Open):
    """``POST /v1/chat/completions``."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    tools: list[ToolDef] | None = None
    functions: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # Accepted and ignored: the upstream has no such knobs.
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
