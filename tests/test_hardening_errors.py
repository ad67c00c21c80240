"""Never a 500 for a client's doing or Redis's state, and Redis trouble reported truthfully.

Real API processes, a real Redis (stopped, or made to refuse writes with ``maxmemory``), a real
image server on 127.0.0.2 and raw sockets for a client that hangs up mid-body.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import redis
import redis.exceptions as rexc

from shared import redis_trouble
from tests.conftest import Gateway, assert_openai_error, start_gateway, wait_until

pytestmark = pytest.mark.slow

MASTER = "sk-master-errors-" + "e" * 24
MODEL = "decopy-deepseek-v3"


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    env = {"API_MASTER_KEY": MASTER, "IMAGE_FETCH_ALLOW_NETWORKS": "127.0.0.2/32"}
    gateway = start_gateway(env, workers=1)
    gateway.api_key = MASTER
    try:
        yield gateway
    finally:
        gateway.stop()


# --- a redirect that is no URL ---------------------------------------------------------------


class Redirects(BaseHTTPRequestHandler):
    """``/to/<quoted Location>`` redirects there, verbatim; anything else is a 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", unquote(path[len("/to/") :]))
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def redirects() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.2", 0), Redirects)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.2:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("location", ["http://[::1", "http:127.0.0.1:19500/x", "http://a b:99999999/x"])
def test_a_redirect_that_is_no_url_is_a_400(gw: Gateway, redirects: str, location: str) -> None:
    url = redirects + "/to/" + location.replace("%", "%25").replace(" ", "%20").replace("[", "%5B")
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    with gw.http() as http:
        resp = http.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": content}]}
        )
        assert_openai_error(resp, 400, "image_fetch_failed")
        assert http.get("/healthz").status_code == 200  # the same keep-alive connection still works


# --- a client that hangs up mid-body ---------------------------------------------------------


def test_a_client_that_drops_mid_body_is_a_499_without_a_traceback(gw: Gateway) -> None:
    host, port = urlsplit(gw.base_url).hostname, urlsplit(gw.base_url).port
    marker = "drop-" + str(id(gw))
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {MASTER}\r\nX-Request-Id: {marker}\r\n".encode()
            + b"Content-Length: 5000\r\n\r\n"
            + b'{"model": "decopy-deepseek-v3", "messages": ['
        )
    line = wait_until(
        lambda: next((ln for ln in gw.api_proc.log().splitlines() if marker in ln and '"status"' in ln), None),
        15,
        "the access log line",
    )
    assert json.loads(line)["status"] == 499
    log = gw.api_proc.log()
    assert "Traceback" not in log and '"level":"ERROR"' not in log


# --- Redis that refuses writes, and Redis that is gone ----------------------------------------


def test_each_redis_trouble_is_named_without_addresses() -> None:
    cases = {
        rexc.OutOfMemoryError("OOM command not allowed"): "out of memory",
        rexc.ResponseError(
            "Error running script (call to f_x): @user_script:2: OOM command not allowed"
        ): "out of memory",
        rexc.ReadOnlyError("You can't write against a read only replica."): "read-only",
        rexc.BusyLoadingError("Redis is loading the dataset in memory"): "loading",
        rexc.ConnectionError("Error 111 connecting to 10.0.0.7:6379. Connection refused."): "cannot reach Redis",
        OSError("[Errno 113] No route to host: 10.0.0.7"): "cannot reach Redis",
    }
    for exc, says in cases.items():
        err = redis_trouble.unavailable(exc)
        assert says in err.message and "10.0.0.7" not in err.message, (exc, err.message)
        assert err.status == 503 and err.code == "redis_unavailable"


def login(gw: Gateway, **headers: str) -> httpx.Response:
    return httpx.post(gw.base_url + "/dashboard/login", data={"key": MASTER}, headers=headers, timeout=10)


def dashboard_calls(gw: Gateway, cookie: str) -> dict[str, httpx.Response]:
    jar = {"Cookie": f"decopy_dashboard={cookie}"}
    admin = {"Authorization": f"Bearer {MASTER}"}
    return {
        "dashboard": httpx.get(gw.base_url + "/dashboard", headers=jar, timeout=10),
        "login page": httpx.get(gw.base_url + "/dashboard/login", headers=jar, timeout=10),
        "login": login(gw),
        "logout": httpx.post(gw.base_url + "/dashboard/logout", headers=jar, timeout=10),
        "doctor": httpx.get(gw.base_url + "/admin/doctor", headers=admin, timeout=10),
        "doctor run": httpx.post(gw.base_url + "/admin/doctor", headers=admin, timeout=10),
    }


def assert_503_in_own_shape(calls: dict[str, httpx.Response], says: str) -> None:
    for name, resp in calls.items():
        assert resp.status_code == 503, (name, resp.status_code, resp.text[:300])
        if name.startswith("doctor"):
            err = assert_openai_error(resp, 503, "redis_unavailable")
            assert says in err["message"], (name, err)
        else:
            assert resp.headers["content-type"].startswith("text/html"), name
            assert says in resp.text, (name, resp.text[:300])


def test_redis_out_of_memory_is_reported_as_such_and_never_a_500(gw: Gateway) -> None:
    session = re.match(r"decopy_dashboard=([^;]+);", login(gw).headers["set-cookie"])
    assert session
    r = redis.Redis.from_url(gw.redis_url)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")  # every write that could grow memory is refused now
    try:
        ready = httpx.get(gw.base_url + "/readyz", timeout=10)
        err = assert_openai_error(ready, 503, "redis_unavailable")
        assert "out of memory" in err["message"] and "cannot reach" not in err["message"]
        with gw.http() as http:
            chat = http.post(
                "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            )
        err = assert_openai_error(chat, 503, "redis_unavailable")
        assert "out of memory" in err["message"]
        calls = dashboard_calls(gw, session.group(1))
        # Reads still work under noeviction: the pages that only read answer as usual.
        calls = {k: v for k, v in calls.items() if v.status_code != 200 and v.status_code != 303}
        assert {"login", "doctor run"} <= set(calls)
        assert_503_in_own_shape(calls, "out of memory")
    finally:
        r.config_set("maxmemory", "0")
        r.close()
    assert httpx.get(gw.base_url + "/readyz", timeout=10).status_code == 200


def test_redis_down_answers_503_everywhere_and_readyz_keeps_its_address_to_the_log() -> None:
    gateway = start_gateway({"API_MASTER_KEY": MASTER}, workers=0)
    try:
        session = re.match(r"decopy_dashboard=([^;]+);", login(gateway).headers["set-cookie"])
        assert session
        port = str(urlsplit(gateway.redis_url).port)
        gateway.stack.procs[0].stop()  # the stack's Redis
        ready = httpx.get(gateway.base_url + "/readyz", timeout=10)
        assert_openai_error(ready, 503, "redis_unavailable")
        assert port not in ready.text and "127.0.0.1" not in ready.text
        assert_503_in_own_shape(dashboard_calls(gateway, session.group(1)), "cannot reach Redis")
        assert port in gateway.api_proc.log()  # the operator still learns where it tried
    finally:
        gateway.stop()


def test_start_up_warns_when_redis_could_evict_the_gateways_keys(gw: Gateway) -> None:
    r = redis.Redis.from_url(gw.redis_url)
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        proc, _ = gw.stack.api(gw.env)
        assert "maxmemory-policy is allkeys-lru" in proc.log()
        proc.stop()
        r.config_set("maxmemory-policy", "noeviction")
        proc, _ = gw.stack.api(gw.env)
        assert "maxmemory-policy" not in proc.log()
        proc.stop()
    finally:
        r.config_set("maxmemory-policy", "noeviction")
        r.close()
