"""Make every HTTP request of a ``requests`` session interruptible from another thread.

The worker's upstream calls run on its event loop (aiohttp) and end when their task is
cancelled. cloudscraper still sends one kind of call itself, in a thread: a ``create-job``
repeated to solve a Cloudflare challenge. A job cancelled while that thread waits for an answer
must let go of the upstream at once too: the client left, nobody should keep calling decopy
for it. ``requests`` has no cancel; its socket read only returns when the
socket is shut down. :func:`track` swaps the connection classes of a session's urllib3 pools for
ones that, before each request, register a closer with the calling thread's :class:`Call`
(:func:`bind` sets it), so :meth:`Call.cancel` shuts the socket down and the blocked read raises.

A connection goes back to the session's pool after each request and the session to the worker's
pool after each job, where another job's thread may take it: so a job's closers act only while
its :func:`bind` block runs (the binding is disarmed, under a lock, before the session is given
back); a late ``cancel()`` (the runner always cancels when a job ends) then touches nothing.

This leans on urllib3's pool attributes (``pool_classes_by_scheme``, ``ConnectionCls``), public
but low-level: ``tests/test_reliability_faults.py`` checks that a cancelled job closes a hanging
``create-job`` at once. SOCKS proxies use their own pool classes and are left as they are.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.poolmanager import PoolManager

from worker.upstream.base import Call

_local = threading.local()


def _shutdown(conn: HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Binding:
    """The connections one job's thread used while bound to its :class:`Call`."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self._lock = threading.Lock()
        self._conns: list[HTTPConnection] = []
        self._armed = True

    def add(self, conn: HTTPConnection) -> None:
        with self._lock:
            if self._armed and conn not in self._conns:
                self._conns.append(conn)
        if self.call.cancelled.is_set():
            self.shutdown_all()

    def shutdown_all(self) -> None:
        with self._lock:
            if self._armed:
                for conn in self._conns:
                    _shutdown(conn)

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
            self._conns.clear()


class _Interruptible(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        binding: _Binding | None = getattr(_local, "binding", None)
        if binding is not None and binding.call.cancelled.is_set():  # cancelled while connecting
            _shutdown(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        binding: _Binding | None = getattr(_local, "binding", None)
        if binding is not None:
            binding.add(self)
        super().request(*args, **kwargs)


class _InterruptibleHTTP(_Interruptible):
    pass


class _InterruptibleHTTPS(_Interruptible, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _InterruptibleHTTP


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _InterruptibleHTTPS


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


_DEFAULT_POOLS = {"http": urllib3.HTTPConnectionPool, "https": urllib3.HTTPSConnectionPool}


def _patch_manager(manager: Any) -> Any:
    # Only urllib3's own pools are swapped (a SOCKS manager has pool classes of its own).
    if isinstance(manager, PoolManager) and manager.pool_classes_by_scheme == _DEFAULT_POOLS:
        manager.pool_classes_by_scheme = dict(_POOLS)
    return manager


def track(session: requests.Session) -> None:
    """Make the requests of ``session`` interruptible by the :class:`Call` bound to their thread."""
    for adapter in session.adapters.values():
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            continue
        _patch_manager(adapter.poolmanager)
        original = adapter.proxy_manager_for

        def proxy_manager_for(proxy: str, _original: Any = original, **kwargs: Any) -> Any:
            return _patch_manager(_original(proxy, **kwargs))

        adapter.proxy_manager_for = proxy_manager_for  # type: ignore[method-assign]


@contextlib.contextmanager
def bind(call: Call) -> Iterator[None]:
    """Within this block, this thread's requests can be interrupted by ``call.cancel()``."""
    binding = _Binding(call)
    call.on_cancel(binding.shutdown_all)
    previous = getattr(_local, "binding", None)
    _local.binding = binding
    try:
        yield
    finally:
        _local.binding = previous
        binding.disarm()
