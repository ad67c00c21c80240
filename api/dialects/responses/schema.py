"""Responses API request bodies as pydantic models (also the schemas of ``/openapi.json``).

Fields OpenAI adds often are accepted and ignored (every model allows extra fields); what the
gateway does with each declared one is decided in :mod:`api.dialects.responses.parse`. A
message item may leave out its ``type`` (OpenAI's "easy" input message), so items are told
apart by a function rather than by a plain tag.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class InputText(_Open):
    type: Literal["input_text"]
    text: str


class OutputText(_Open):
    """An earlier answer's text, sent back as history."""

    type: Literal["output_text"]
    text: str


class Refusal(_Open):
    type: Literal["refusal"]
    refusal: str


class InputImage(_Open):
    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


Part = Annotated[InputText | OutputText | Refusal | InputImage, Field(discriminator="type")]


class MessageItem(_Open):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(_Open):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(_Open):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Part]


class ReasoningItem(_Open):
    """An earlier answer's reasoning, sent back as history: accepted, not sent upstream."""

    type: Literal["reasoning"]


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None) or "message"


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]


class FormatSpec(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextOptions(_Open):
    format: FormatSpec | None = None


class ResponsesRequest(_Open):
    """``POST /v1/responses``."""

    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    stream: bool | None = False
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    reasoning: dict[str, Any] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    background: bool | None = None
    # Accepted and ignored: the upstream has no such knobs.
    include: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    truncation: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


TYPES_HINT = (
    "items of type 'message' (parts 'input_text', 'input_image', 'output_text'), 'function_call', "
    "'function_call_output' and 'reasoning'"
)
