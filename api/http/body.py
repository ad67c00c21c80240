"""Reading a JSON request body safely: size cap, content type, UTF-8, nesting."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

# JSON, or no Content-Type at all (some scripts send none). Not text/plain: a web page of any other
# site may POST text/plain without asking the browser's CORS preflight, so accepting it would let
# such a page use a gateway that runs open on a developer's machine (no master key).
_JSON_TYPES = ("application/json", "")


async def read_json(request: Request, max_bytes: int) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type '{ctype}' is not supported: send the body as JSON with 'Content-Type: application/json'."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
