"""Slow and idle connections cannot starve the API, against a real API process.

Before: 1,100 idle sockets under the common open-file limit of 1024 made the API drop every new
connection, no idle socket was ever closed, and slow headers or bodies were held as long as the
client liked. Now the API raises its open-file limit at start, closes a connection whose request
headers or body do not arrive in time (408), and answers 503 over its connection cap.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.http.connections import connection_cap
from tests.conftest import Gateway, start_gateway, wait_until

pytestmark = pytest.mark.slow

IDLE = 1500
COMMON_LIMIT = 1024


def test_the_uvicorn_internals_the_guard_relies_on_are_still_there() -> None:
    for name in (
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "on_message_complete",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name
    init = HttpToolsProtocol.__init__.__code__.co_names
    for attr in ("config", "loop", "transport", "cycle", "client"):
        assert attr in init, attr
    assert {"response_started", "response_complete"} <= set(RequestResponseCycle.__init__.__code__.co_names)


def test_the_connection_cap_stays_below_the_open_file_limit() -> None:
    assert connection_cap(2048, 20000) == 2048
    assert connection_cap(2048, 1024) == 1024 - 128


@contextlib.contextmanager
def open_file_limit(soft: int) -> Iterator[None]:
    """Processes started inside inherit ``soft`` as their open-file limit (the common default)."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, old[1]), old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 500:
        pytest.skip(f"the hard open-file limit ({hard}) cannot hold {IDLE} sockets here")
    env = {"API_HEADER_TIMEOUT": "3", "API_BODY_TIMEOUT": "3", "API_KEEPALIVE_TIMEOUT": "1"}
    with open_file_limit(COMMON_LIMIT):
        gateway = start_gateway(env, workers=1)
    if soft < IDLE + 200:  # this test process holds the sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE + 500), hard))
    try:
        yield gateway
    finally:
        gateway.stop()


def address(gw: Gateway) -> tuple[str, int]:
    url = urlsplit(gw.base_url)
    return url.hostname or "127.0.0.1", url.port or 80


def readable(sock: socket.socket, timeout: float) -> bool:
    """``select.select`` cannot watch descriptors past 1024; poll can."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(timeout * 1000))


def closed_by_server(sock: socket.socket) -> bool:
    if not readable(sock, 0):
        return False
    try:
        return sock.recv(4096, socket.MSG_PEEK) == b"" or b"408" in sock.recv(4096)
    except OSError:
        return True


def slow_sender(addr: tuple[str, int], data: bytes, got: list[bytes], stop: threading.Event) -> None:
    """Send ``data`` one byte every half second until the server answers or closes."""
    with socket.create_connection(addr, timeout=60) as sock:
        sock.setblocking(False)
        for byte in data:
            if stop.is_set():
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            if readable(sock, 0.5):
                break
        sock.setblocking(True)
        sock.settimeout(30)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                got.append(chunk)
        got.append(b"<closed>")


def test_idle_sockets_and_slow_senders_do_not_starve_ordinary_requests(gw: Gateway) -> None:
    addr = address(gw)
    body = b"key=" + b"x" * 200
    slow_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200 + b"\r\n\r\n"
    slow_body = (
        b"POST /dashboard/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    idle: list[socket.socket] = []
    stop = threading.Event()
    answers: dict[str, list[bytes]] = {"header": [], "body": []}
    senders = [
        threading.Thread(target=slow_sender, args=(addr, slow_header, answers["header"], stop), daemon=True),
        threading.Thread(target=slow_sender, args=(addr, slow_body, answers["body"], stop), daemon=True),
    ]
    try:
        for _ in range(IDLE):
            idle.append(socket.create_connection(addr, timeout=10))
        for t in senders:
            t.start()
        # Ordinary requests keep succeeding while all of that is held (fresh connections each time).
        for i in range(5):
            resp = httpx.get(gw.base_url + "/healthz", timeout=10)
            assert resp.status_code == 200, resp.text
            done = gw.client().chat.completions.create(
                model="decopy-deepseek-v3", messages=[{"role": "user", "content": f"still there {i}?"}]
            )
            assert done.choices[0].finish_reason == "stop"
        # Every idle socket is closed by the API, within its header deadline.
        wait_until(lambda: all(closed_by_server(s) for s in idle), 60, "the API to close the idle sockets")
        for t in senders:
            t.join(60)
        assert not any(t.is_alive() for t in senders)
        for kind in ("header", "body"):
            got = b"".join(answers[kind])
            assert got.startswith(b"HTTP/1.1 408 ") and got.endswith(b"<closed>"), (kind, got[:200])
    finally:
        stop.set()
        for s in idle:
            s.close()


def test_an_idle_keep_alive_connection_is_closed(gw: Gateway) -> None:
    with socket.create_connection(address(gw), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        while sock.recv(65536):  # the API closes it after API_KEEPALIVE_TIMEOUT, not us
            assert time.monotonic() - started < 30


def test_over_the_connection_cap_a_request_gets_503() -> None:
    gw = start_gateway({"API_MAX_CONNECTIONS": "40", "API_HEADER_TIMEOUT": "60"}, workers=0)
    try:
        held = [socket.create_connection(address(gw), timeout=10) for _ in range(45)]
        try:
            wait_until(lambda: httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 503, 20, "a 503")
        finally:
            for s in held:
                s.close()
        wait_until(lambda: httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 200, 20, "a 200 again")
    finally:
        gw.stop()
