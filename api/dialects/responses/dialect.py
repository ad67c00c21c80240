"""The Responses dialect as the engine sees it: one per request, since the ``response`` object
echoes the request's settings and the finished one is kept for the store."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from api.dialects.responses import encode
from api.dialects.responses.parse import ResponsesCall
from api.engine.call import ChatCall
from api.engine.events import Answer
from api.http.responses import JSONBody, error_response
from shared.errors import GatewayError
from shared.messages import Turn


def echo(parsed: ResponsesCall) -> dict[str, Any]:
    """The request's settings as the ``response`` object repeats them."""
    req = parsed.request
    fmt: dict[str, Any] = {"type": "text"}
    if req.text is not None and req.text.format is not None:
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True)
    return {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": None,
        "parallel_tool_calls": parsed.call.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": (req.reasoning or {}).get("effort"), "summary": None},
        "service_tier": "default",
        "store": parsed.store,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {"format": fmt},
        "tool_choice": req.tool_choice or "auto",
        "tools": req.tools or [],
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": "disabled",
        "user": req.user,
        "metadata": req.metadata or {},
    }


class ResponsesDialect:
    name = "responses"

    def __init__(self, parsed: ResponsesCall) -> None:
        self.parsed = parsed
        self.response = encode.envelope(response_id=encode.new_id("resp"), model=parsed.call.model, echo=echo(parsed))
        #: The finished response object (whole answers; a stream's is its encoder's ``final``).
        self.final: dict[str, Any] | None = None
        self.encoder: encode.ResponseStreamEncoder | None = None
        self.answer_turn: Turn | None = None

    def stream_encoder(self, call: ChatCall) -> encode.ResponseStreamEncoder:
        self.encoder = encode.ResponseStreamEncoder(self.response, reasoning=call.reasoning)
        return self.encoder

    def whole(self, call: ChatCall, answer: Answer, headers: dict[str, str]) -> Response:
        self.final = encode.whole(answer, self.response, reasoning=call.reasoning)
        self.answer_turn = {"role": "assistant", "text": answer.content}
        if answer.tool_calls:
            self.answer_turn["tool_calls"] = answer.tool_calls
        return JSONBody(self.final, headers=headers)

    def finished(self) -> tuple[dict[str, Any], Turn] | None:
        """The finished response and the answer's turn, once there is one (streamed or whole)."""
        enc = self.encoder
        if enc is not None and enc.final is not None:
            turn: Turn = {"role": "assistant", "text": enc.text}
            if enc.calls:
                turn["tool_calls"] = enc.calls
            return enc.final, turn
        if self.final is not None and self.answer_turn is not None:
            return self.final, self.answer_turn
        return None

    def error_response(self, exc: GatewayError) -> Response:
        return error_response(exc)
