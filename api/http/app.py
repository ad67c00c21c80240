"""The Starlette application factory."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from api.dashboard.routes import routes as dashboard_routes
from api.dialects.responses.store import ResponseStore
from api.engine.image_fetch import ImageFetcher
from api.engine.service import ChatService
from api.http.access import AccessLogMiddleware
from api.http.cors import APICorsMiddleware
from api.http.login_throttle import LoginThrottle
from api.http.middleware import AuthMiddleware, RequestIdMiddleware
from api.http.responses import error_response
from api.http.routes import routes
from api.http.shutdown import DrainMiddleware
from api.http.stats import StatsService
from api.relay.hub import PubSubHub
from api.relay.queue import JobQueue
from api.tenancy.admin import routes as admin_routes
from api.tenancy.keys import KeyStore
from api.tenancy.limits import Limiter, LimitsMiddleware
from api.tenancy.requestlog import RequestLog
from api.tenancy.requestlog_routes import routes as requestlog_routes
from api.tenancy.routing_admin import initial_routing, start_routing
from api.tenancy.routing_admin import routes as routing_admin_routes
from api.tenancy.waiting import WaitingCollector
from api.tenancy.weights import routes as weight_routes
from shared import redis_trouble
from shared.errors import GatewayError, InternalError, MethodNotAllowed, NotFound
from shared.logs import setup_logging
from shared.metrics import API_REGISTRY
from shared.redis_connect import async_redis
from shared.settings import Settings
from shared.telemetry import Reporter

#: Set by ``python -m api`` before uvicorn forks its processes: the id of this API container's
#: group of processes, so ``/metrics`` shows all of them and nothing of other replicas.
INSTANCE_ENV = "DECOPY_API_INSTANCE"

#: nginx's status for a client that closed the connection before the answer (access log only).
CLIENT_CLOSED = 499

log = logging.getLogger("api")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc, request.scope)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"No route for {request.method} {request.url.path}."), request.scope)
    if exc.status_code == 405:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        response = error_response(
            MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}; allowed: {allowed}."),
            request.scope,
        )
        if allowed:
            response.headers["Allow"] = allowed  # RFC 9110: a 405 names the methods that would work
        return response
    err = GatewayError(str(exc.detail), status=exc.status_code)
    err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(err, request.scope)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up while sending its request: its doing, no server error and no traceback.
    Nobody reads this response; its 499 is what the access log records."""
    return Response(status_code=CLIENT_CLOSED)


def _allowed_methods(request: Request) -> str:
    """Every method a route serves on this path (Starlette's own ``Allow`` names the first route's only)."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError("The gateway hit an internal error; it has been logged."), request.scope)


def create_app(settings: Settings) -> Starlette:
    """Build the gateway app; Redis connections open in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Every command in the request path waits at most REDIS_TIMEOUT: a Redis that is down or
        # hung costs a client a quick 503, never a hang. The hub's pub/sub connection blocks on
        # reads by design, so it gets its own client without a read timeout.
        timeout = settings.redis_timeout
        redis = async_redis(settings, socket_connect_timeout=timeout, socket_timeout=timeout, health_check_interval=0)
        pubsub_redis = async_redis(
            settings, socket_connect_timeout=timeout, socket_keepalive=True, health_check_interval=0
        )
        if warning := await redis_trouble.eviction_warning(redis):
            log.warning("%s", warning)
        hub = PubSubHub(pubsub_redis, subscribe_timeout=timeout)
        await hub.start()
        queue = JobQueue(redis, max_queue=settings.max_queue, expires_s=settings.queue_timeout)
        app.state.redis = redis
        app.state.hub = hub
        app.state.queue = queue
        app.state.chat = ChatService(settings=settings, hub=hub, queue=queue, images=app.state.images)
        waiting = WaitingCollector(app.state.chat.in_flight)  # jobs waiting per key, in the snapshots
        API_REGISTRY.register(waiting)
        app.state.responses = ResponseStore(redis, ttl_s=settings.responses_ttl_seconds)
        reporter = Reporter(
            redis,
            role="api",
            registry=API_REGISTRY,
            interval=settings.metrics_interval,
            instance=os.environ.get(INSTANCE_ENV),
        )
        app.state.stats = StatsService(redis, reporter)
        await reporter.start()
        app.state.keys = KeyStore(redis)
        app.state.limiter = Limiter(redis, lease_ttl_s=settings.limit_lease_ttl)
        app.state.login_throttle = LoginThrottle(redis, settings)
        live, breakers = await start_routing(app, redis, settings)  # routes and breakers (docs/upstreams.md)
        app.state.request_log = RequestLog(
            redis, max_entries=settings.request_log_max_entries, max_age=settings.request_log_max_age
        )
        await app.state.request_log.start()
        try:
            yield
        finally:
            API_REGISTRY.unregister(waiting)
            await app.state.request_log.stop()
            await breakers.stop()
            await live.stop()
            await reporter.stop()
            await hub.stop()
            await pubsub_redis.aclose()
            await redis.aclose()

    # CORS (when configured) answers preflights before the drain and auth checks could refuse them.
    cors = [Middleware(APICorsMiddleware, origins=settings.cors_allow_origins)] if settings.cors_allow_origins else []
    app = Starlette(
        routes=[*routes, *admin_routes, *routing_admin_routes, *requestlog_routes, *weight_routes, *dashboard_routes],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(AccessLogMiddleware, log_prompts=settings.log_prompts),
            *cors,
            Middleware(DrainMiddleware),
            Middleware(AuthMiddleware, master_key=settings.api_master_key, allow_origins=settings.cors_allow_origins),
            Middleware(LimitsMiddleware),
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            ClientDisconnect: _client_gone,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.draining = False  # set on SIGTERM/SIGINT by api.http.shutdown.GatewayServer
    initial_routing(app, settings)  # app.state.models and .routing; kept current from Redis (lifespan)
    app.state.images = ImageFetcher(
        max_bytes=settings.image_max_bytes,
        timeout=settings.image_fetch_timeout,
        allow_networks=settings.image_allow_networks,
    )
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory when ``API_WORKERS`` > 1: each uvicorn process builds its own app."""
    from sse_starlette.sse import AppStatus

    settings = Settings.from_env()
    setup_logging(settings.log_level)
    # Streams in flight run on through uvicorn's graceful shutdown (API_DRAIN_SECONDS) instead of
    # being cut the moment the process is asked to exit.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    return create_app(settings)
