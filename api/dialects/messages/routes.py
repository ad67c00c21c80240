"""Anthropic's routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens``, and the model
list in Anthropic's shape (``GET /v1/models`` answers it when the request carries
``anthropic-version``; see :mod:`api.http.routes`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.dialects.messages.dialect import MessagesDialect
from api.dialects.messages.parse import parse_count_tokens, parse_messages
from api.engine.service import ChatService
from api.http.access import note
from api.http.body import read_json
from api.http.responses import JSONBody
from shared.models import Name

#: Anthropic dates its models; the gateway's have no date, so they carry the process's start.
_CREATED_AT = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def messages(request: Request) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    body = await read_json(request, state.settings.max_body_bytes)
    call, thinking = parse_messages(body, state.settings, state.models)
    return await service.answer(request, call, MessagesDialect(thinking=thinking))


async def count_tokens(request: Request) -> Response:
    state = request.app.state
    body = await read_json(request, state.settings.max_body_bytes)
    call = parse_count_tokens(body, state.settings, state.models)
    note(request, model=call.model, dialect="messages")
    return JSONBody({"input_tokens": call.prompt_tokens})


def model_info(entry: Name) -> dict[str, Any]:
    """One model in Anthropic's shape (``/v1/models/{id}`` with ``anthropic-version``)."""
    return {"type": "model", "id": entry.name, "display_name": entry.name, "created_at": _CREATED_AT}


def model_page(entries: list[Name]) -> dict[str, Any]:
    """The model list in Anthropic's shape: one page with every name."""
    data = [model_info(e) for e in entries]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
