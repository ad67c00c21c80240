"""The Responses API's routes: create (whole or streamed), retrieve, list input items, delete."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.dialects.responses.dialect import ResponsesDialect
from api.dialects.responses.parse import parse_responses, read_request
from api.dialects.responses.store import ResponseStore, owner_of
from api.engine.service import ChatService
from api.http.body import read_json
from api.http.responses import JSONBody
from api.http.sse import EventSourceResponse
from shared.errors import InvalidRequest
from shared.messages import Turn


def _owner(request: Request) -> str:
    return owner_of(getattr(request.state, "principal", None))


async def create(request: Request) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    store: ResponseStore = state.responses
    req = read_request(await read_json(request, state.settings.max_body_bytes))
    owner = _owner(request)
    history: list[Turn] = []
    if req.previous_response_id:
        previous = await store.load(req.previous_response_id, owner, param="previous_response_id")
        history = previous["turns"]
    parsed = parse_responses(req, state.settings, state.models, history)
    dialect = ResponsesDialect(parsed)
    response = await service.answer(request, parsed.call, dialect)
    if not parsed.store:
        return response

    async def save() -> None:
        done = dialect.finished()
        if done is not None:
            final, turn = done
            items = [{"id": "msg_" + uuid.uuid4().hex, **item} for item in parsed.items]
            record = {"owner": owner, "response": final, "input_items": items, "turns": history + parsed.turns + [turn]}
            await store.save(record)

    if isinstance(response, EventSourceResponse):
        response.body_iterator = _saved_before_the_end(response.body_iterator, dialect, save)
    else:
        await save()
    return response


async def _saved_before_the_end(
    events: AsyncIterable[Any], dialect: ResponsesDialect, save: Callable[[], Awaitable[None]]
) -> AsyncIterator[Any]:
    """The stream's events, with the response stored before its terminal event goes out: a client
    that retrieves the response as soon as it saw ``response.completed`` finds it."""
    saved = False
    async with aclosing(events) as inner:  # type: ignore[type-var]
        async for chunk in inner:
            if not saved and dialect.finished() is not None:
                saved = True
                await save()
            yield chunk


async def retrieve(request: Request) -> Response:
    store: ResponseStore = request.app.state.responses
    record = await store.load(request.path_params["response_id"], _owner(request))
    return JSONBody(record["response"])


async def input_items(request: Request) -> Response:
    store: ResponseStore = request.app.state.responses
    record = await store.load(request.path_params["response_id"], _owner(request))
    items: list[dict[str, Any]] = record["input_items"]
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    if order == "desc":
        items = items[::-1]
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("limit must be a whole number from 1 to 100.", param="limit")
    page = items[: int(raw_limit)]
    return JSONBody(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }
    )


async def delete(request: Request) -> Response:
    store: ResponseStore = request.app.state.responses
    response_id = request.path_params["response_id"]
    await store.delete(response_id, _owner(request))
    return JSONBody({"id": response_id, "object": "response", "deleted": True})


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
]
