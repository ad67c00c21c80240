"""Make every HTTP request of a ``requests`` session interruptible from another thread.

A job cancelled while its thread waits for an upstream answer (a ``create-job`` that hangs, the
first bytes of ``get-job``) must let go of the upstream at once: the client left, nobody should
keep calling decopy for it. ``requests`` has no cancel; its socket read only returns when the
socket is shut down. :func:`track` swaps the connection classes of a session's urllib3 pools for
ones that, before each request, register a closer with the calling thread's :class:`Call`
(:func:`bind` sets it), so :meth:`Call.cancel` shuts the socket down and the blocked read raises.

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


class _Interruptible(HTTPConnection):
    def _bound_call(self) -> Call | None:
        return getattr(_local, "call", None)

    def connect(self) -> None:
        super().connect()
        call = self._bound_call()
        if call is not None and call.cancelled.is_set():  # cancelled while connecting
            _shutdown(self)

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        call = self._bound_call()
        if call is not None:
            call.on_cancel(lambda: _shutdown(self))
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
    """Within this block, this thread's requests register with ``call``."""
    previous = getattr(_local, "call", None)
    _local.call = call
    try:
        yield
    finally:
        _local.call = previous
