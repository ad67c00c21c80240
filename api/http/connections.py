"""What a slow or idle client may cost the API: bounded time per request, bounded connections.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) and refuses requests over
a connection count with a 503 (``limit_concurrency``), and both are set from settings here. It
has no bound on the time a client takes to send a request's headers or its body: a socket that
connects and sends nothing, or sends one byte every few seconds, is held for ever, and a few
thousand of them exhaust the process's file descriptors. :class:`GuardedProtocol` adds those
two bounds to uvicorn's httptools protocol:

- ``API_HEADER_TIMEOUT``: from the connection's start (or the first byte of a following request
  on a keep-alive connection) to the end of the request's headers;
- ``API_BODY_TIMEOUT``: from the end of the headers to the end of the body.

Past either, the client gets ``408 Request Timeout`` (when it had begun a request) and the
connection is closed; a handler still waiting for the body sees a client disconnect.

This is the one place that reaches into uvicorn's protocol (its parser callbacks and its
``transport``/``cycle`` attributes); ``tests/test_hardening_connections.py`` fails by name if an
upgrade moves them. :func:`raise_open_file_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard
limit at start, and :func:`connection_cap` keeps the 503 cap below what the descriptors allow.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("api.connections")

#: Descriptors kept for what is not a client connection (Redis, image fetches, logs, the listener).
RESERVED_FDS = 128

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
            log.info("closing a connection from %s: its request %s took too long", _peer(self.client), what)
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


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one where the system allows; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may forbid it: keep what we have
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(wanted: int, open_files: int) -> int:
    """``API_MAX_CONNECTIONS``, lowered to what the open-file limit can hold (with a reserve)."""
    room = max(16, open_files - RESERVED_FDS)
    if wanted > room:
        log.warning(
            "API_MAX_CONNECTIONS=%d is more than the open-file limit (%d) allows: %d connections at most",
            wanted,
            open_files,
            room,
        )
        return room
    return wanted


class GuardedConfig(uvicorn.Config):
    """uvicorn's config carrying the two deadlines :class:`GuardedProtocol` reads."""

    def __init__(self, app: Any, *, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedProtocol, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
