"""The chat-completions dialect as the engine sees it: its stream encoder, whole answer and errors."""

from __future__ import annotations

from starlette.responses import Response

from api.dialects.chat import encode
from api.engine.call import ChatCall
from api.engine.events import Answer
from api.http.responses import JSONBody, error_response
from shared.errors import GatewayError


class ChatDialect:
    name = "chat"

    def stream_encoder(self, call: ChatCall) -> encode.ChunkEncoder:
        return encode.ChunkEncoder(encode.new_completion_id(), call.model, include_usage=call.include_usage)

    def whole(self, call: ChatCall, answer: Answer, headers: dict[str, str]) -> Response:
        # reasoning an upstream marked itself (an OpenAI-compatible one) is shown whatever REASONING_MODELS says
        shown = call.reasoning or bool(answer.reasoning)
        return JSONBody(encode.whole(answer, model=call.model, reasoning=shown), headers=headers)

    def error_response(self, exc: GatewayError) -> Response:
        return error_response(exc)


CHAT = ChatDialect()
