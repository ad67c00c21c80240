"""JSON responses: one orjson-rendered body class and one renderer for gateway errors.

Every route answers through these, so an error has one shape before a stream starts (a
dialect with its own error shape, such as Anthropic's, renders it from the same error).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from shared.errors import GatewayError


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: GatewayError) -> Response:
    return JSONBody(exc.body(), status_code=exc.status, headers=exc.headers())
