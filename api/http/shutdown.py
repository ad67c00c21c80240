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
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Generator
from types import FrameType

import uvicorn
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from api.http.responses import error_response
from shared.errors import ServiceUnavailable
from shared.fence import PrivateUse

log = logging.getLogger("api.shutdown")

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
                )
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
