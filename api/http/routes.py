"""Route handlers: parse, call a service, map the result. Nothing else lives here."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from api.dialects.chat.dialect import CHAT
from api.dialects.chat.parse import parse_chat
from api.dialects.completions import routes as completions
from api.dialects.messages import routes as messages
from api.dialects.responses import routes as responses
from api.engine.service import ChatService
from api.http.body import read_json
from api.http.health import check_ready
from api.http.openapi import build_document
from api.http.responses import JSONBody
from api.http.stats import StatsService
from shared.errors import ModelNotFound
from shared.models import ModelTable, Name
from shared.routing import RoutingConfig

_CREATED = int(time.time())


async def chat_completions(request: Request) -> Response:
    state = request.app.state
    service: ChatService = state.chat
    body = await read_json(request, state.settings.max_body_bytes)
    call = parse_chat(body, state.settings, state.models)
    return await service.answer(request, call, CHAT)


def _model(entry: Name, routing: RoutingConfig) -> dict[str, object]:
    """A model object (a route); aliases and upstream names say which model id they stand for."""
    route = routing.route(entry.model.id)
    targets = [t.label for t in route.targets] if route is not None else []
    return {
        "id": entry.name,
        "object": "model",
        "created": _CREATED,
        "owned_by": route.targets[0].upstream if route is not None else "decopy",
        "upstream": entry.model.upstream,
        "alias_of": None if entry.is_id else entry.model.id,
        "targets": targets,
    }


def _anthropic(request: Request) -> bool:
    """The Anthropic SDKs (and Claude Code) send ``anthropic-version``: they get Anthropic's shapes."""
    return "anthropic-version" in request.headers


async def list_models(request: Request) -> Response:
    models: ModelTable = request.app.state.models
    routing: RoutingConfig = request.app.state.routing
    if _anthropic(request):
        return JSONBody(messages.model_page(models.names()))
    return JSONBody({"object": "list", "data": [_model(entry, routing) for entry in models.names()]})


async def get_model(request: Request) -> Response:
    models: ModelTable = request.app.state.models
    entry = models.entry(request.path_params["model_id"])
    if entry is None:
        raise ModelNotFound(f"The model '{request.path_params['model_id']}' does not exist.", param="model")
    if _anthropic(request):
        return JSONBody(messages.model_info(entry))
    return JSONBody(_model(entry, request.app.state.routing))


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    await check_ready(request.app)
    return PlainTextResponse("ready")


_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: Request) -> Response:
    stats: StatsService = request.app.state.stats
    return Response(await stats.pod_metrics(), media_type=_PROMETHEUS)


async def cluster_metrics(request: Request) -> Response:
    stats: StatsService = request.app.state.stats
    return Response(await stats.cluster_metrics(), media_type=_PROMETHEUS)


async def admin_stats(request: Request) -> Response:
    stats: StatsService = request.app.state.stats
    return JSONBody(await stats.cluster_stats())


async def openapi_json(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:  # built once, on first use
        state.openapi = build_document(state.models.ids())
    return JSONBody(state.openapi)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    *messages.routes,
    *responses.routes,
    *completions.routes,
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/metrics/cluster", cluster_metrics, methods=["GET"]),
    Route("/admin/stats", admin_stats, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
