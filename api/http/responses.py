"""JSON responses: one orjson-rendered body class and one renderer for gateway errors.

Every route and middleware answers an error through :func:`error_response`, so an error has one
shape per dialect before a stream starts: OpenAI's envelope, or Anthropic's on the Anthropic
routes (chosen here, by path, for errors raised before any route runs as well: a 401 from the
auth middleware, a 429 from the limits).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from api.dialects.messages.errors import error_body as anthropic_error_body
from api.dialects.messages.errors import wants_anthropic_errors
from shared.errors import GatewayError


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: GatewayError, scope: Scope | None = None) -> Response:
    """The error answer for ``exc``; ``scope`` (the request) picks the dialect's error shape."""
    if scope is not None and wants_anthropic_errors(scope.get("path", ""), "anthropic-version" in Headers(scope=scope)):
        return JSONBody(anthropic_error_body(exc), status_code=exc.status, headers=exc.headers())
    return JSONBody(exc.body(), status_code=exc.status, headers=exc.headers())
