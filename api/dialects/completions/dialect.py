"""The legacy completions dialect as the engine sees it."""

from __future__ import annotations

from starlette.responses import Response

from api.dialects.completions import encode
from api.engine.call import ChatCall
from api.engine.events import Answer
from api.http.responses import JSONBody, error_response
from shared.errors import GatewayError


class CompletionsDialect:
    name = "completions"

    def stream_encoder(self, call: ChatCall) -> encode.CompletionChunkEncoder:
        return encode.CompletionChunkEncoder(call.model, include_usage=call.include_usage)

    def whole(self, call: ChatCall, answer: Answer, headers: dict[str, str]) -> Response:
        return JSONBody(encode.whole(answer, model=call.model), headers=headers)

    def error_response(self, exc: GatewayError) -> Response:
        return error_response(exc)


COMPLETIONS = CompletionsDialect()
