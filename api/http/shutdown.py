"""Graceful shutdown of an API process: drain, then exit 0.

On the first SIGTERM or SIGINT the process starts *draining*:

1. ``app.state.draining`` is set: ``GET /readyz`` answers 503 ``draining`` (a load balancer takes
   the replica out) and :class:`DrainMiddleware` refuses every new request with an OpenAI-shaped
   503 ``draining``, ``Retry-After: 1`` and ``Connection: close``, so clients retry elsewhere.
   The listening socket stays open meanwhile: a client is told, not refused a connection.
2. Chat calls in flight (``ChatService.in_flight``: queued, waiting or streaming) run on until
   they end by themselves, for at most ``API_DRAIN_SECONDS``.
3. What is still running then gets an error (an SSE error event, or a 503 if its response had
   not started) ``shutting_down`` and its job is withdrawn; then uvicorn's own shutdown runs
   and the process exits 0. A second signal skips the wait.

uvicorn alone would close the listening socket at once (new clients: connection refused) and
re-raise the signal when done (exit status -15, or a KeyboardInterrupt traceback on SIGINT).
sse-starlette, by default, stops every stream the moment uvicorn is asked to exit: it patches
``uvicorn.Server.handle_exit`` to set its ``AppStatus.should_exit`` and also watches the server's
``should_exit``. :class:`GatewayServer` overrides ``handle_exit`` (so the patch never runs) and
sets ``should_exit`` only once the drain is over; sse-starlette's automatic drain is turned off
too, so nothing else can cut the streams this module lets finish.

This module is uvicorn's fence (:mod:`shared.fence`): uvicorn has no public drain hook, so
:class:`GatewayServer` overrides three of ``uvicorn.Server``'s methods, listed in :data:`PRIVATE_USES`.
It also holds uvicorn's other private use, :class:`GuardedProtocol` (its httptools protocol with
deadlines for a request's headers and body; why: :mod:`api.http.connections`), and the
:class:`GuardedConfig` that carries those deadlines to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.http.responses import error_response
from shared.errors import ServiceUnavailable
from shared.fence import PrivateUse

log = logging.getLogger("api.shutdown")

_PROTOCOL = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"

PRIVATE_USES = (
    PrivateUse(
        "uvicorn",
        "uvicorn.server:Server.handle_exit",
        "the first signal starts the drain instead of closing the listening socket",
        params=("self", "sig", "frame"),
    ),
    PrivateUse(
        "uvicorn",
        "uvicorn.server:Server.on_tick",
        "the main loop's once-per-tick call: where the drain checks the calls still in flight",
        params=("self", "counter"),
    ),
    PrivateUse(
        "uvicorn",
        "uvicorn.server:Server.capture_signals",
        "uvicorn's re-raises the signal at exit (status -15 or a traceback); the gateway exits 0",
        params=("self",),
    ),
    PrivateUse("uvicorn", "uvicorn.server:Server().should_exit", "set once the drain is over: uvicorn's own shutdown"),
    PrivateUse("uvicorn", "uvicorn.server:Server().force_exit", "a second Ctrl-C forces the exit, as uvicorn's does"),
    # GuardedProtocol: deadlines for a request's headers and body (uvicorn has none).
    *(
        PrivateUse("uvicorn", f"{_PROTOCOL}.{name}", why, params=params)
        for name, params, why in (
            ("connection_made", ("self", "transport"), "a new connection arms the headers' deadline"),
            ("connection_lost", ("self", "exc"), "a closed connection disarms it"),
            ("on_message_begin", ("self",), "a keep-alive connection's next request arms the headers' deadline"),
            ("on_headers_complete", ("self",), "the headers are in: the body's deadline starts"),
            ("on_message_complete", ("self",), "the body is in: no deadline until the next request"),
        )
    ),
    *(
        PrivateUse("uvicorn", f"{_PROTOCOL}().{name}", why)
        for name, why in (
            ("config", "the deadlines come from the config, so they reach every process of the supervisor"),
            ("loop", "the deadline's timer"),
            ("transport", "a missed deadline writes the 408 and closes the connection"),
            ("cycle", "a 408 only where no response was begun (the request's cycle says)"),
            ("client", "the peer's address in the log line"),
        )
    ),
)

#: Paths still served while draining: probes and metrics must keep answering.
DRAIN_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/cluster"})
#: After the grace period, how long the interrupted streams get to send their error and close.
ABORT_WAIT_S = 5.0


class DrainMiddleware:
    """Refuses new requests with 503 ``draining`` once ``app.state.draining`` is set (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and getattr(scope["app"].state, "draining", False)
            and scope.get("path", "") not in DRAIN_EXEMPT
        ):
            response = error_response(
                ServiceUnavailable(
                    "This gateway instance is shutting down; retry the request (another instance will answer).",
                    code="draining",
                    retry_after=1,
                ),
                scope,
            )
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the drain above in front of its own shutdown, exiting 0 on a signal."""

    def __init__(self, config: uvicorn.Config, app: Starlette, *, drain_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_seconds = drain_seconds
        self._drain_started: float | None = None
        self._aborted_at: float | None = None
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started is None and not self.should_exit:
            log.info(
                "%s: draining (up to %gs for %d call(s) in flight), then exiting",
                signal.Signals(sig).name,
                self._drain_seconds,
                self._in_flight(),
            )
            self._drain_started = time.monotonic()
            self._app.state.draining = True
            return
        # A second signal: stop waiting (and, like uvicorn, a second Ctrl-C forces the exit).
        log.info("%s again: exiting now", signal.Signals(sig).name)
        self._exit()
        if sig == signal.SIGINT:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            self._drain_step(time.monotonic())
        return await super().on_tick(counter)

    def _in_flight(self) -> int:
        chat = getattr(self._app.state, "chat", None)
        return len(chat.in_flight) if chat is not None else 0

    def _drain_step(self, now: float) -> None:
        assert self._drain_started is not None
        left = self._in_flight()
        if left == 0:
            log.info("drained in %.1fs", now - self._drain_started)
            self._exit()
        elif self._aborted_at is None and now >= self._drain_started + self._drain_seconds:
            log.warning("grace period over: interrupting %d call(s) still in flight", left)
            self._app.state.chat.abort_all(
                ServiceUnavailable(
                    "The gateway instance serving this answer shut down before it was complete; retry the request.",
                    code="shutting_down",
                    retry_after=1,
                )
            )
            self._aborted_at = now
        elif self._aborted_at is not None and now >= self._aborted_at + ABORT_WAIT_S:
            log.warning("%d call(s) did not end after their interruption; exiting anyway", left)
            self._exit()

    def _exit(self) -> None:
        self.should_exit = True
        AppStatus.should_exit = True  # any SSE response still open stops now

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's version re-raises the signal once the server stopped, which ends the process
        # with -15 (SIGTERM) or a KeyboardInterrupt traceback (SIGINT) instead of exit status 0.
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


# --- uvicorn's protocol with deadlines for a request's headers and body (api.http.connections) ---

log_connections = logging.getLogger("api.connections")

_TIMEOUT_BODY = b"The request took too long to send.\n"
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _TIMEOUT_BODY
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for a request's headers and its body.

    The deadlines come from the uvicorn config (``GuardedConfig``), so they also reach the
    processes uvicorn's supervisor spawns (the config is pickled to them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout: float = getattr(self.config, "header_timeout", 10.0)
        self._body_timeout: float = getattr(self.config, "body_timeout", 30.0)
        self._deadline: asyncio.TimerHandle | None = None
        self._begun = False  # a request's first byte arrived and its body has not ended

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._begun and (cycle is None or cycle.response_complete or not cycle.response_started):
            log_connections.info("closing a connection from %s: its request %s took too long", _peer(self.client), what)
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        if self._deadline is None:  # a following request on a keep-alive connection
            self._arm(self._header_timeout, "headers")

    def on_headers_complete(self) -> None:
        self._arm(self._body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._begun = False
        super().on_message_complete()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


class GuardedConfig(uvicorn.Config):
    """uvicorn's config carrying the two deadlines :class:`GuardedProtocol` reads."""

    def __init__(self, app: Any, *, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedProtocol, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
