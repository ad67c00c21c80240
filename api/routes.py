"""Route handlers: parse, call a service, map the result. Nothing else lives here."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from api.body import read_json
from api.chat import ChatService
from api.chat_request import parse_chat
from api.openapi import build_document
from api.openai_format import JSONBody
from shared.errors import ModelNotFound, ServiceUnavailable
from shared.models import ModelTable

_CREATED = int(time.time())


async def chat_completions(request: Request) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    body = await read_json(request, state.settings.max_body_bytes)
    call = parse_chat(body, state.settings, state.models)
    stream = await service.start(call, request.state.request_id)
    return await service.respond(request, call, stream)


def _model(model_id: str, upstream: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "decopy", "upstream": upstream}


async def list_models(request: Request) -> Response:
    models: ModelTable = request.app.state.models
    data = [_model(mid, models.resolve(mid).upstream) for mid in models.ids()]  # type: ignore[union-attr]
    return JSONBody({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    models: ModelTable = request.app.state.models
    model_id = request.path_params["model_id"]
    model = models.resolve(model_id)
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return JSONBody(_model(model_id if model_id in models.ids() else model.id, model.upstream))


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    if request.app.state.draining:
        raise ServiceUnavailable("This gateway instance is shutting down.", code="draining")
    if not request.app.state.hub.connected:
        raise ServiceUnavailable("Redis is not reachable.", code="redis_unavailable")
    return PlainTextResponse("ready")


async def openapi_json(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:  # built once, on first use
        state.openapi = build_document(state.models.ids())
    return JSONBody(state.openapi)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
