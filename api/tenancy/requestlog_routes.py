"""Reading the request log: ``GET /admin/requests`` (every key's) and ``GET /v1/gateway/requests`` (the caller's own).

Thin: parse the filters, call :class:`api.tenancy.requestlog.RequestLog`, map the result. Both page
with a cursor (``next_cursor``, newest first); ``format=jsonl`` streams every match as JSON lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.http.responses import JSONBody
from api.tenancy.keys import redis_errors
from api.tenancy.requestlog import Filters, RequestLog, caller_of, parse_cursor, parse_filters
from shared.errors import InvalidRequest, ServiceUnavailable

_MAX_LIMIT = 1000


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 100
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        raise InvalidRequest(f"Invalid 'limit': give 1 to {_MAX_LIMIT}.", param="limit", code="invalid_value")
    return value


def _log(request: Request) -> RequestLog:
    request_log: RequestLog = request.app.state.request_log
    if not request_log.enabled:
        raise ServiceUnavailable("The request log is off (REQUEST_LOG_MAX_ENTRIES=0).", code="request_log_off")
    return request_log


async def _answer(request: Request, filters: Filters) -> Response:
    request_log = _log(request)
    params = request.query_params
    cursor = parse_cursor(params.get("cursor"))
    fmt = params.get("format") or "json"
    if fmt not in ("json", "jsonl"):
        raise InvalidRequest("Invalid 'format': give json or jsonl.", param="format", code="invalid_value")
    if fmt == "jsonl":
        async with redis_errors():  # the first page: a Redis outage is a 503 before the 200 goes out
            first, _ = await request_log.query(filters, cursor=cursor, limit=1)

        async def lines() -> AsyncIterator[bytes]:
            if not first:
                return
            async for entry in request_log.export(filters, cursor=cursor):
                yield orjson.dumps(entry) + b"\n"

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="requests.jsonl"'},
        )
    async with redis_errors():
        entries, next_cursor = await request_log.query(filters, cursor=cursor, limit=_limit(params.get("limit")))
    return JSONBody(
        {"object": "list", "data": entries, "next_cursor": next_cursor, "has_more": next_cursor is not None}
    )


async def admin_requests(request: Request) -> Response:
    return await _answer(request, parse_filters(request.query_params))


async def own_requests(request: Request) -> Response:
    """A key's own requests, never anyone else's: the key filter is the caller's id, whatever was asked."""
    key_id, _ = caller_of(request.scope)
    return await _answer(request, parse_filters(request.query_params, own=key_id))


routes = [
    Route("/admin/requests", admin_requests, methods=["GET"]),
    Route("/v1/gateway/requests", own_requests, methods=["GET"]),
]
