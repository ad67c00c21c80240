"""The legacy completions request body as a pydantic model (also its schema in ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CompletionRequest(BaseModel):
    """``POST /v1/completions``."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    prompt: str | list[str]
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    # Refused when they ask for something (see api.dialects.completions.parse).
    suffix: str | None = None
    echo: bool | None = None
    logprobs: int | None = None
    best_of: int | None = None
    # Accepted and ignored: the upstream has no such knobs.
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    logit_bias: dict[str, Any] | None = None
