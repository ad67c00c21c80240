"""The dashboard's HTTP side: login and session, what a wrong key or no cookie reaches (nothing),
the CSRF checks, and the doctor run a worker does when the dashboard asks."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis

from shared import names
from tests.conftest import Gateway, start_gateway, wait_until

MASTER = "sk-master-http-test"

# Every endpoint the dashboard page reads or changes data through.
DATA_ENDPOINTS = [
    ("GET", "/admin/stats"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("DELETE", "/admin/keys/some-id"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/doctor"),
    ("POST", "/admin/doctor"),
    ("POST", "/dashboard/api/chat"),
    ("GET", "/admin/upstreams"),
    ("GET", "/admin/routes"),
    ("POST", "/admin/routes"),
]
CHAT = {"model": "decopy-deepseek-v3", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def dash() -> Iterator[Gateway]:
    gw = start_gateway({"API_MASTER_KEY": MASTER, "DASHBOARD_SESSION_TTL": "600"}, workers=1)
    gw.api_key = MASTER
    yield gw
    gw.stop()


def login(dash: Gateway, key: str = MASTER, **headers: str) -> httpx.Response:
    return httpx.post(dash.base_url + "/dashboard/login", data={"key": key}, headers=headers, timeout=10)


def session_cookie(resp: httpx.Response) -> str:
    match = re.match(r"decopy_dashboard=([^;]+);", resp.headers["set-cookie"])
    assert match, resp.headers["set-cookie"]
    return match.group(1)


def call(
    dash: Gateway, method: str, path: str, *, cookie: str | None = None, dashboard_header: bool = True, **headers: str
) -> httpx.Response:
    if cookie is not None:
        headers["Cookie"] = f"decopy_dashboard={cookie}"
    if dashboard_header:
        headers["X-Dashboard"] = "1"
    body = CHAT if path.endswith("/chat") else {"name": "x"} if method == "POST" else None
    return httpx.request(method, dash.base_url + path, json=body, headers=headers, timeout=10)


def test_login_sets_a_session_cookie_not_the_key(dash: Gateway) -> None:
    resp = login(dash)
    assert resp.status_code == 303 and resp.headers["location"] == "/dashboard"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test below
    assert MASTER not in cookie and MASTER not in resp.headers["location"]
    session = session_cookie(resp)
    # Redis keeps only the session id's hash, with the TTL of DASHBOARD_SESSION_TTL.
    r = redis.Redis.from_url(dash.redis_url)
    key = names.dashboard_session_key(hashlib.sha256(session.encode()).hexdigest())
    assert r.get(key) == b"admin" and 590 <= cast(int, r.ttl(key)) <= 600
    assert not [k for k in r.scan_iter("decopy:dashboard:*") if session.encode() in k]
    page = httpx.get(dash.base_url + "/dashboard", headers={"Cookie": f"decopy_dashboard={session}"})
    assert page.status_code == 200 and 'src="/dashboard/static/dashboard.js"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "every asset comes from the gateway"


def test_secure_cookie_over_https_behind_a_trusted_proxy(dash: Gateway) -> None:
    # uvicorn applies X-Forwarded-Proto from 127.0.0.1 (its FORWARDED_ALLOW_IPS default).
    resp = login(dash, **{"X-Forwarded-Proto": "https"})
    assert resp.status_code == 303 and "; Secure" in resp.headers["set-cookie"]


def test_wrong_key_gets_no_session(dash: Gateway) -> None:
    resp = login(dash, key="sk-wrong")
    assert resp.status_code == 401 and "set-cookie" not in resp.headers
    assert "That is not the master key." in resp.text
    assert login(dash, key="").status_code == 401


def test_login_from_another_origin_is_refused(dash: Gateway) -> None:
    for origin in ("http://evil.example", "null", f"http://127.0.0.1.evil.example:{dash.base_url.rsplit(':', 1)[1]}"):
        resp = login(dash, Origin=origin)
        assert resp.status_code == 403 and "set-cookie" not in resp.headers, origin


def test_login_through_a_tls_proxy_on_another_port(dash: Gateway) -> None:
    # The page was https://127.0.0.1:8443 at the proxy; the gateway sees plain http on its own port.
    resp = login(dash, Origin="https://127.0.0.1:8443")
    assert resp.status_code == 303 and "set-cookie" in resp.headers


@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
def test_no_data_without_the_master_key_or_a_session(dash: Gateway, method: str, path: str) -> None:
    for headers, cookie in [
        ({}, None),
        ({"Authorization": "Bearer sk-wrong"}, None),
        ({}, "forged-session-id"),
        ({"Authorization": "Bearer sk-wrong"}, session_cookie(login(dash))),
    ]:
        resp = call(dash, method, path, cookie=cookie, **headers)  # type: ignore[arg-type]  # header names only
        assert resp.status_code == 401, (headers, cookie, resp.text)
        assert resp.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
def test_a_session_without_the_dashboard_header_is_refused(dash: Gateway, method: str, path: str) -> None:
    resp = call(dash, method, path, cookie=session_cookie(login(dash)), dashboard_header=False)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "csrf_check_failed"


def test_cross_origin_changes_are_refused(dash: Gateway) -> None:
    session = session_cookie(login(dash))
    resp = call(dash, "POST", "/admin/doctor", cookie=session, Origin="http://evil.example")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "csrf_check_failed"


def test_v1_does_not_take_the_cookie(dash: Gateway) -> None:
    session = session_cookie(login(dash))
    resp = httpx.post(
        dash.v1 + "/chat/completions",
        json=CHAT,
        timeout=10,
        headers={"Cookie": f"decopy_dashboard={session}", "X-Dashboard": "1"},
    )
    assert resp.status_code == 401


def test_logout_ends_the_session_everywhere(dash: Gateway) -> None:
    session = session_cookie(login(dash))
    assert call(dash, "GET", "/admin/doctor", cookie=session).status_code == 200
    resp = httpx.post(dash.base_url + "/dashboard/logout", headers={"Cookie": f"decopy_dashboard={session}"})
    assert resp.status_code == 303 and "Max-Age=0" in resp.headers["set-cookie"]
    assert call(dash, "GET", "/admin/doctor", cookie=session).status_code == 401
    page = httpx.get(dash.base_url + "/dashboard", headers={"Cookie": f"decopy_dashboard={session}"})
    assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"


def test_try_it_streams_with_the_session(dash: Gateway) -> None:
    session = session_cookie(login(dash))
    resp = call(dash, "POST", "/dashboard/api/chat", cookie=session, Origin=dash.base_url)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Hello! You said: hi"


def test_doctor_runs_in_a_worker_when_asked(dash: Gateway) -> None:
    r = redis.Redis.from_url(dash.redis_url)
    r.delete(names.DOCTOR_LAST)
    admin = {"Authorization": f"Bearer {MASTER}"}
    first = httpx.post(dash.base_url + "/admin/doctor", headers=admin, timeout=10)
    assert first.status_code == 202 and first.json()["started"] is True
    job_id = first.json()["pending"]["job_id"]
    second = httpx.post(dash.base_url + "/admin/doctor", headers=admin, timeout=10)
    if second.json()["pending"] is not None:  # still running: a second press queues nothing more
        assert second.json()["started"] is False and second.json()["pending"]["job_id"] == job_id

    def finished() -> dict[str, Any] | None:
        state = httpx.get(dash.base_url + "/admin/doctor", headers=admin, timeout=10).json()
        return state if state["pending"] is None and state["last"] else None

    state = wait_until(finished, 30, "the doctor report")
    last = state["last"]
    assert last["ok"] is True and last["source"] == "dashboard"
    assert last["host"] in dash.workers[0].log() or last["host"].endswith(f"-{dash.workers[0].pid}")
    assert last["base_url"] == dash.sim_url


def test_dashboard_disabled_without_a_master_key(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(workers=0)
    page = httpx.get(gw.base_url + "/dashboard")
    assert page.status_code == 403 and "set API_MASTER_KEY" in page.text
    resp = httpx.post(gw.base_url + "/dashboard/login", data={"key": ""})
    assert resp.status_code == 403 and "set-cookie" not in resp.headers
    assert httpx.get(gw.base_url + "/admin/doctor").status_code == 403


def test_dashboard_shows_breakers_and_changes_routes(dash: Gateway) -> None:
    """The page has the section; its calls (a session, the dashboard header) list the
    targets with their breakers and change a route."""
    cookie = session_cookie(login(dash))
    page = httpx.get(dash.base_url + "/dashboard", headers={"Cookie": f"decopy_dashboard={cookie}"}, timeout=10)
    assert 'id="upstreams"' in page.text and 'id="route-form"' in page.text
    headers = {"Cookie": f"decopy_dashboard={cookie}", "X-Dashboard": "1"}
    body = {"id": "dash-route", "targets": [{"upstream": "decopy", "model": "GPT-4o-mini"}]}
    made = httpx.post(dash.base_url + "/admin/routes", json=body, headers=headers, timeout=10)
    assert made.status_code == 201, made.text
    listing = httpx.get(dash.base_url + "/admin/upstreams", headers=headers, timeout=10).json()
    (decopy,) = [u for u in listing["data"] if u["name"] == "decopy"]
    targets = {t["target"]: t for t in decopy["targets"]}
    assert targets["decopy/GPT-4o-mini"]["state"] == "closed"
    gone = httpx.delete(dash.base_url + "/admin/routes/dash-route", headers=headers, timeout=10)
    assert gone.status_code == 200 and gone.json()["deleted"] is True
