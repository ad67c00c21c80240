"""sse-starlette's ``EventSourceResponse`` with one helper task per stream instead of four.

sse-starlette runs every response in an anyio task group of four tasks: the body, a ping loop, a
disconnect listener and a shutdown listener, each wrapped by anyio (a cancel scope, an
``anyio.Event`` per task, a task handle). With 1,000 open streams that machinery was about a
fifth of the API's memory per stream, and starting it a good part of the CPU per request.

:class:`EventSourceResponse` keeps the library's behaviour and most of its code (headers, the
body loop ``_stream_response``, the event encoding, the ping event, HEAD and WebSocket handling,
the shutdown signal) and changes only how the response is driven:

- the body is sent by the request's own task;
- one task waits for the client's ``http.disconnect`` and, while it waits, sends the ping
  comment every ``ping`` seconds (the library's ping loop does the same from a task of its own);
  a disconnect stops the body at once, as before;
- the shutdown signal (``AppStatus.should_exit``, see ``api.http.shutdown``) is waited for by one task
  per event loop, through the library's own listener, for all open streams together.

Whatever ends first (the body, a disconnect, the shutdown) ends the others, as the library's task
group does. Options the gateway does not use (a data sender, a shutdown event or grace period)
go the library's way, unchanged.

Sends without a timeout also skip the no-op cancel scope sse-starlette puts around every send:
with ``send_timeout`` unset (the gateway never sets it) that scope can never fire, yet creating,
entering and leaving it was a good part of the per-event cost (30 events per answer). For the
same reason the body loop passes ``bytes`` events through as they are, without the library's
per-event debug log call and conversion helper.

This module is sse-starlette's fence (:mod:`shared.fence`): every private part of the library the
gateway relies on is used here, and listed in :data:`PRIVATE_USES`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import anyio
from sse_starlette import EventSourceResponse as _LibraryEventSourceResponse
from sse_starlette.event import ServerSentEvent, ensure_bytes
from starlette.types import Message, Receive, Scope, Send

from shared.fence import PrivateUse

log = logging.getLogger("sse_starlette.sse")

_RESPONSE = "sse_starlette.sse:EventSourceResponse"

PRIVATE_USES = (
    PrivateUse(
        "sse-starlette",
        f"{_RESPONSE}.__call__",
        "driven by the request's task and one watcher, not a task group of four (memory and CPU per stream)",
        params=("self", "scope", "receive", "send"),
    ),
    PrivateUse(
        "sse-starlette",
        f"{_RESPONSE}._stream_response",
        "the library's body loop without its per-event cancel scope, log call and conversion",
        params=("self", "send"),
    ),
    PrivateUse(
        "sse-starlette",
        f"{_RESPONSE}._send_with_timeout",
        "a send without a timeout skips the no-op cancel scope around it",
        params=("self", "send", "message"),
    ),
    PrivateUse(
        "sse-starlette",
        f"{_RESPONSE}._listen_for_exit_signal",
        "the library's shutdown listener, awaited once per event loop for every open stream",
        params=(),
    ),
    PrivateUse("sse-starlette", f"{_RESPONSE}()._send_lock", "the final and ping sends hold it, as the library's do"),
    PrivateUse(
        "sse-starlette", f"{_RESPONSE}()._shutdown_event", "a response given a shutdown event goes the library's way"
    ),
    PrivateUse("sse-starlette", f"{_RESPONSE}()._shutdown_grace_period", "given a grace period: the library's way"),
    PrivateUse("sse-starlette", f"{_RESPONSE}()._cleanup_timeout", "cleanup bounded as the library does"),
)


class _Stop:
    """Ends one response's body from outside (a disconnect, the shutdown), once."""

    __slots__ = ("task", "fired", "error")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False
        self.error: BaseException | None = None

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.task.cancel()


class _ShutdownFanOut:
    """One waiter per event loop for sse-starlette's shutdown signal, ending every open stream."""

    def __init__(self) -> None:
        self.open: set[_Stop] = set()
        self.exiting = False
        self._task: asyncio.Task[None] | None = None

    def add(self, stop: _Stop) -> None:
        if self.exiting:
            stop.fire()
            return
        self.open.add(stop)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._wait(), name="sse-shutdown")

    async def _wait(self) -> None:
        await _LibraryEventSourceResponse._listen_for_exit_signal()
        self.exiting = True
        for stop in list(self.open):
            stop.fire()


_fan_outs: dict[asyncio.AbstractEventLoop, _ShutdownFanOut] = {}


def _shutdown_fan_out() -> _ShutdownFanOut:
    loop = asyncio.get_running_loop()
    fan_out = _fan_outs.get(loop)
    if fan_out is None:
        for old in [lp for lp in _fan_outs if lp.is_closed()]:
            del _fan_outs[old]  # tests run several loops in one process
        fan_out = _fan_outs[loop] = _ShutdownFanOut()
    return fan_out


class EventSourceResponse(_LibraryEventSourceResponse):
    """Same behaviour as sse-starlette's, with one helper task per stream (see the module docstring)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
            return
        await super()._send_with_timeout(send, message)

    async def _stream_response(self, send: Send) -> None:
        """The library's body loop (same messages, same cleanup on failure), for sends without a timeout."""
        if self.send_timeout is not None:
            await super()._stream_response(send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sep = self.sep
        async for data in self.body_iterator:
            try:
                chunk = data if type(data) is bytes else ensure_bytes(data, sep)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except BaseException:
                # As the library: close the suspended iterator so its cleanup runs first.
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    with anyio.move_on_after(self._cleanup_timeout, shield=True) as cleanup_scope:
                        try:
                            await aclose()
                        except Exception:
                            log.exception("Error closing body iterator after encoding or send failure")
                    if cleanup_scope.cancel_called:
                        log.warning("Body iterator cleanup cancelled after %s seconds", self._cleanup_timeout)
                raise
        async with self._send_lock:
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"].upper() == "HEAD"
            or self.data_sender_callable is not None
            or self._shutdown_event is not None
            or self._shutdown_grace_period > 0
        ):
            await super().__call__(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        stop = _Stop(task)
        shutdown = _shutdown_fan_out()
        shutdown.add(stop)
        watcher = asyncio.create_task(self._watch(receive, send, stop))
        try:
            await self._stream_response(send)
        except asyncio.CancelledError:
            # Our own cancel (disconnect, shutdown) ends the response normally, as the library's
            # task group does; any other cancel goes on up.
            if not stop.fired or task.uncancel() > 0:
                raise
        finally:
            shutdown.open.discard(stop)
            stop.fired = True  # the watcher must not cancel the task any more
            watcher.cancel()
        if stop.error is not None:
            raise stop.error
        if self.background is not None:
            await self.background()

    async def _watch(self, receive: Receive, send: Send, stop: _Stop) -> None:
        """Wait for the client's disconnect, sending the ping comment every ``ping`` seconds meanwhile."""
        interval = self.ping_interval
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval
        try:
            while self.active:
                if interval > 0:
                    try:
                        async with asyncio.timeout_at(next_ping):
                            message = await receive()
                    except TimeoutError:
                        next_ping += interval
                        await self._send_ping(send)
                        continue
                else:
                    message = await receive()
                if message["type"] == "http.disconnect":
                    self.active = False
                    if self.client_close_handler_callable:
                        await self.client_close_handler_callable(message)
                    break
        except Exception as exc:  # noqa: BLE001 - re-raised by __call__, as the task group would
            stop.error = exc
        stop.fire()

    async def _send_ping(self, send: Send) -> None:
        ping = (
            self.ping_message_factory()
            if self.ping_message_factory
            else ServerSentEvent(comment=f"ping - {datetime.now(timezone.utc)}", sep=self.sep)
        )
        data = ensure_bytes(ping, self.sep)
        async with self._send_lock:
            if self.active:
                await self._send_with_timeout(send, {"type": "http.response.body", "body": data, "more_body": True})
