"""Admin routes for upstreams and routes (master key only, like every ``/admin/*`` route).

``/admin/upstreams`` and ``/admin/routes``: list, create (POST), replace (PUT), delete. Every
change is one versioned write of the live configuration (:mod:`shared.liveconfig`) that every
API replica and worker picks up within about a second. A change that would leave a route
pointing at an upstream that does not exist is refused (400), as is any malformed field. API
keys are never part of it: an upstream names the environment variable that holds its key.

Also :func:`start_routing`, which gives each API process its copy of the configuration: the model
table the dialects resolve names with (one model id per route) and the breakers' states for
``/admin/upstreams``, the dashboard and the ``decopy_upstream_breaker_state`` metric.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.http.body import read_json
from api.http.responses import JSONBody
from shared import metrics
from shared.breaker import STATE_VALUE, Breakers, BreakerState, read_states
from shared.errors import InvalidRequest, NotFound
from shared.liveconfig import LiveConfig
from shared.models import ModelTable
from shared.routing import (
    BUILTIN,
    RouteConfigError,
    RoutingConfig,
    Stored,
    combine,
    parse_name,
    parse_route_id,
    parse_targets,
    parse_upstream,
)
from shared.routing import (
    Route as RouteConfig,
)
from shared.settings import Settings

_MAX_BODY = 64 * 1024


def model_table(config: RoutingConfig, settings: Settings) -> ModelTable:
    """The names a client may send: one id per route (its first target's model as upstream name)."""
    return ModelTable({r.id: r.targets[0].model for r in config.routes.values()}, settings.model_aliases)


def initial_routing(app: Starlette, settings: Settings) -> None:
    """Before Redis is reached: the defaults (``DECOPY_MODELS``), so the app is whole from the start."""
    from shared.routing import seed_from_settings

    config = combine(
        seed_from_settings(settings.upstreams, settings.routes, settings.decopy_models),
        version=0,
        decopy_base_url=settings.decopy_base_url,
        decopy_models=settings.decopy_models,
    )
    app.state.routing = config
    app.state.models = model_table(config, settings)


async def start_routing(app: Starlette, redis: Redis, settings: Settings) -> tuple[LiveConfig, Breakers]:
    live = LiveConfig(redis, settings)

    def changed(config: RoutingConfig) -> None:
        app.state.routing = config
        app.state.models = model_table(config, settings)
        app.state.openapi = None  # rebuilt with the new model ids on its next request

    def seen(states: dict[str, BreakerState]) -> None:
        metrics.breaker_states({t: STATE_VALUE.get(s.state, 0) for t, s in states.items()})

    live.on_change(changed)
    await live.start()
    breakers = Breakers(
        redis,
        threshold=settings.breaker_failures,
        cooldown=settings.breaker_cooldown,
        interval=max(settings.config_poll_interval, 1.0),
        targets=lambda: live.current.labels(),
        on_snapshot=seen,
    )
    await breakers.start()
    app.state.live_config = live
    return live, breakers


def _invalid(exc: RouteConfigError) -> InvalidRequest:
    return InvalidRequest(exc.message, param=exc.param, code="invalid_routing")


async def _change(request: Request, mutate: Any) -> RoutingConfig:
    live: LiveConfig = request.app.state.live_config
    try:
        return await live.change(mutate)
    except RouteConfigError as exc:
        raise _invalid(exc) from None


async def upstreams_report(redis: Redis, config: RoutingConfig, cooldown: float) -> list[dict[str, Any]]:
    """Every upstream with its targets' breakers: ``/admin/upstreams`` and the dashboard."""
    states = await read_states(redis, config.labels())
    out = []
    for up in config.upstreams.values():
        targets = [label for label in config.labels() if label.split("/", 1)[0] == up.name]
        out.append({**up.public(), "targets": [states[t].public(cooldown) for t in targets if t in states]})
    return out


async def list_upstreams(request: Request) -> Response:
    live: LiveConfig = request.app.state.live_config
    await live.refresh()  # an admin reads what is in Redis now, not the last poll
    config = live.current
    data = await upstreams_report(request.app.state.redis, config, request.app.state.settings.breaker_cooldown)
    return JSONBody({"object": "list", "version": config.version, "data": data})


async def _upstream_body(request: Request, name: str | None) -> tuple[str, Any]:
    body = await read_json(request, _MAX_BODY)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_routing")
    if name is None:
        try:
            name = parse_name(body.get("name"), "name")
        except RouteConfigError as exc:
            raise _invalid(exc) from None
    elif "name" in body and body["name"] != name:
        raise InvalidRequest("The body's 'name' differs from the URL's.", param="name", code="invalid_routing")
    if name == BUILTIN:
        raise InvalidRequest(
            f"'{BUILTIN}' is the built-in upstream: its settings are DECOPY_*.", param="name", code="builtin_upstream"
        )
    return name, {k: v for k, v in body.items() if k != "name"}


async def create_upstream(request: Request) -> Response:
    name, body = await _upstream_body(request, None)

    def mutate(stored: Stored) -> Stored:
        if name in stored.upstreams:
            raise RouteConfigError(
                f"An upstream named '{name}' exists; PUT /admin/upstreams/{name} replaces it.", "name"
            )
        return dataclasses.replace(stored, upstreams={**stored.upstreams, name: parse_upstream(name, body)})

    config = await _change(request, mutate)
    return JSONBody({**config.upstreams[name].public(), "version": config.version}, status_code=201)


async def update_upstream(request: Request) -> Response:
    name, body = await _upstream_body(request, request.path_params["name"])

    def mutate(stored: Stored) -> Stored:
        if name not in stored.upstreams:
            raise _Missing(f"No upstream named '{name}'.")
        return dataclasses.replace(stored, upstreams={**stored.upstreams, name: parse_upstream(name, body)})

    config = await _missing_is_404(request, mutate)
    return JSONBody({**config.upstreams[name].public(), "version": config.version})


async def delete_upstream(request: Request) -> Response:
    name = request.path_params["name"]
    if name == BUILTIN:
        raise InvalidRequest(
            f"'{BUILTIN}' is the built-in upstream and cannot be deleted.", param="name", code="builtin_upstream"
        )

    def mutate(stored: Stored) -> Stored:
        if name not in stored.upstreams:
            raise _Missing(f"No upstream named '{name}'.")
        return dataclasses.replace(stored, upstreams={k: v for k, v in stored.upstreams.items() if k != name})

    config = await _missing_is_404(request, mutate)
    return JSONBody({"name": name, "deleted": True, "version": config.version})


class _Missing(Exception):
    pass


async def _missing_is_404(request: Request, mutate: Any) -> RoutingConfig:
    try:
        return await _change(request, mutate)
    except _Missing as exc:
        raise NotFound(str(exc), code="not_found") from None


async def list_routes(request: Request) -> Response:
    live: LiveConfig = request.app.state.live_config
    await live.refresh()
    config = live.current
    return JSONBody({"object": "list", "version": config.version, "data": [r.public() for r in config.routes.values()]})


async def _route_body(request: Request, rid: str | None) -> RouteConfig:
    body = await read_json(request, _MAX_BODY)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_routing")
    unknown = sorted(set(body) - {"id", "targets"})
    if unknown:
        raise InvalidRequest(f"Unknown route field '{unknown[0]}'.", param=unknown[0], code="invalid_routing")
    try:
        if rid is None:
            rid = parse_route_id(body.get("id"))
        elif "id" in body and body["id"] != rid:
            raise RouteConfigError("The body's 'id' differs from the URL's.", "id")
        return RouteConfig(rid, parse_targets(body.get("targets")))
    except RouteConfigError as exc:
        raise _invalid(exc) from None


async def create_route(request: Request) -> Response:
    route = await _route_body(request, None)
    settings: Settings = request.app.state.settings

    def mutate(stored: Stored) -> Stored:
        if route.id in stored.routes or route.id in settings.decopy_models:
            raise RouteConfigError(f"A route '{route.id}' exists; PUT /admin/routes/{route.id} replaces it.", "id")
        return dataclasses.replace(stored, routes={**stored.routes, route.id: route})

    config = await _change(request, mutate)
    return JSONBody({**config.routes[route.id].public(), "version": config.version}, status_code=201)


async def update_route(request: Request) -> Response:
    """Replace a route (a default route too: the stored one then takes its place)."""
    route = await _route_body(request, request.path_params["route_id"])
    settings: Settings = request.app.state.settings

    def mutate(stored: Stored) -> Stored:
        if route.id not in stored.routes and route.id not in settings.decopy_models:
            raise _Missing(f"No route '{route.id}'; POST /admin/routes creates one.")
        return dataclasses.replace(stored, routes={**stored.routes, route.id: route})

    config = await _missing_is_404(request, mutate)
    return JSONBody({**config.routes[route.id].public(), "version": config.version})


async def delete_route(request: Request) -> Response:
    rid = request.path_params["route_id"]
    settings: Settings = request.app.state.settings

    def mutate(stored: Stored) -> Stored:
        if rid not in stored.routes:
            if rid in settings.decopy_models:
                raise RouteConfigError(f"'{rid}' is a default route (DECOPY_MODELS); it cannot be deleted here.", "id")
            raise _Missing(f"No route '{rid}'.")
        return dataclasses.replace(stored, routes={k: v for k, v in stored.routes.items() if k != rid})

    config = await _missing_is_404(request, mutate)
    restored = config.routes.get(rid)
    return JSONBody(
        {"id": rid, "deleted": True, "version": config.version, "default": restored.public() if restored else None}
    )


routes = [
    Route("/admin/upstreams", list_upstreams, methods=["GET"]),
    Route("/admin/upstreams", create_upstream, methods=["POST"]),
    Route("/admin/upstreams/{name}", update_upstream, methods=["PUT"]),
    Route("/admin/upstreams/{name}", delete_upstream, methods=["DELETE"]),
    Route("/admin/routes", list_routes, methods=["GET"]),
    Route("/admin/routes", create_route, methods=["POST"]),
    Route("/admin/routes/{route_id:path}", update_route, methods=["PUT"]),
    Route("/admin/routes/{route_id:path}", delete_route, methods=["DELETE"]),
]
