"""The Messages dialect as the engine sees it: its stream encoder, whole answer and errors.

One per request: it carries whether the answer shows its reasoning (a request with
``thinking: {"type": "disabled"}`` gets no thinking blocks, though a reasoning model's
``<think>`` part is still split off and never shown as text).
"""

from __future__ import annotations

from starlette.responses import Response

from api.dialects.messages import encode
from api.dialects.messages.errors import error_body
from api.engine.call import ChatCall
from api.engine.events import Answer
from api.http.responses import JSONBody
from shared.errors import GatewayError


class MessagesDialect:
    name = "messages"

    def __init__(self, *, thinking: bool = True) -> None:
        self.thinking = thinking

    def stream_encoder(self, call: ChatCall) -> encode.MessageStreamEncoder:
        return encode.MessageStreamEncoder(
            encode.new_message_id(), call.model, call.prompt_tokens, thinking=self.thinking and call.reasoning
        )

    def whole(self, call: ChatCall, answer: Answer, headers: dict[str, str]) -> Response:
        body = encode.message(
            answer, message_id=encode.new_message_id(), model=call.model, thinking=self.thinking and call.reasoning
        )
        return JSONBody(body, headers=headers)

    def error_response(self, exc: GatewayError) -> Response:
        return JSONBody(error_body(exc), status_code=exc.status, headers=exc.headers())
