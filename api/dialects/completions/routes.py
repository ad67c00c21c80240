"""The legacy completions route: ``POST /v1/completions``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.dialects.completions.dialect import COMPLETIONS
from api.dialects.completions.parse import parse_completion
from api.engine.service import ChatService
from api.http.body import read_json


async def completions(request: Request) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    body = await read_json(request, state.settings.max_body_bytes)
    return await service.answer(request, parse_completion(body, state.models), COMPLETIONS)


routes = [Route("/v1/completions", completions, methods=["POST"])]
