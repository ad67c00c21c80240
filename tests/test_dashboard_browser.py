"""The dashboard in a real browser: Debian's headless chromium, driven through playwright-core.

Each test logs in through the form as a person would, acts on the page, and checks both what the
page shows and what the gateway did. Screenshots land in tests/artifacts/. Every request the
page makes is recorded: none may leave 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from api.http.app import create_app
from shared.settings import Settings
from tests.browser_driver import Browser, missing_tools, npm_ci
from tests.conftest import Gateway, directive, start_gateway, wait_until

MASTER = "sk-master-browser-test"


def _paths() -> set[str]:
    return {getattr(route, "path", "") for route in create_app(Settings()).routes}


# The dashboard reads endpoints that other branches build; without them those panels show a notice
# and these tests cannot check them (the rest of the dashboard is tested either way).
needs_stats = pytest.mark.skipif("/admin/stats" not in _paths(), reason="GET /admin/stats is not in this build")
needs_keys = pytest.mark.skipif("/admin/keys" not in _paths(), reason="/admin/keys is not in this build")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    problem = missing_tools()
    if problem:
        pytest.fail(problem)
    npm_ci()
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def dash() -> Iterator[Gateway]:
    gw = start_gateway({"API_MASTER_KEY": MASTER, "DASHBOARD_REFRESH": "1"})
    gw.api_key = MASTER
    yield gw
    gw.stop()


@pytest.fixture
def page(browser: Browser, dash: Gateway) -> Iterator[Browser]:
    """A fresh browser context; afterwards, check that no request left 127.0.0.1 and no script failed."""
    browser.new_page()
    yield browser
    requests = browser("requests")
    assert requests, "the page made no request at all"
    outside = [r["url"] for r in requests if urlsplit(r["url"]).hostname != "127.0.0.1"]
    assert outside == [], f"requests left 127.0.0.1: {outside}"
    # Script errors only: HTTP statuses (a refused login, a panel whose endpoint is absent) are checked by the tests.
    problems = [p for p in browser("problems") if "Failed to load resource" not in p]
    assert problems == [], problems


def log_in(page: Browser, dash: Gateway) -> None:
    page.goto(dash.base_url + "/dashboard")
    page("fill", sel="#key", value=MASTER)
    page("click", sel="form button[type=submit]")
    page.wait_text("#updated", "^updated")
    assert page("url") == dash.base_url + "/dashboard"


def test_login_form_keeps_the_key_out_of_url_and_cookie(page: Browser, dash: Gateway) -> None:
    assert page.goto(dash.base_url + "/dashboard") == 200
    assert page("url") == dash.base_url + "/dashboard/login"  # no session: sent to the form
    page("fill", sel="#key", value="sk-not-the-master")
    page("click", sel="form button[type=submit]")
    assert page.wait_text("#login-message", "not the master key")
    page.screenshot("dashboard-login-refused")
    assert page("cookies") == []

    log_in(page, dash)
    cookies = page("cookies")
    assert len(cookies) == 1
    cookie = cookies[0]
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"]) == (
        "decopy_dashboard",
        True,
        "Strict",
        False,
        "/",
    )  # Secure only over https (tested over HTTP elsewhere)
    assert MASTER not in cookie["value"] and len(cookie["value"]) >= 40
    assert all(MASTER not in r["url"] for r in page("requests"))
    # The script cannot read the cookie (HttpOnly).
    assert page("eval", expr="document.cookie") == ""
    page.screenshot("dashboard-wide")

    page("click", sel="#logout")
    page.wait_js("location.pathname === '/dashboard/login'")
    assert page.goto(dash.base_url + "/dashboard") == 200 and page("url").endswith("/dashboard/login")


@needs_stats
def test_live_figures_change_after_requests(page: Browser, dash: Gateway) -> None:
    log_in(page, dash)
    before = int(page.wait_text("#v-total", r"^\d[\d,]*$").replace(",", ""))
    page.wait_text("#workers tbody", "alive")
    client = dash.client()
    for i in range(6):
        client.chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": f"hi {i}"}])
    after = page.wait_text("#v-total", r"^\d", timeout=30)
    wait_until(lambda: int(page.text("#v-total").replace(",", "")) >= before + 6, 30, "requests total to rise")
    assert int(after.replace(",", "")) >= before
    assert page.text("#v-rps") not in ("–", "0.00")
    assert page.wait_text("#v-ttft50", r"\d+ ms|\d+\.\d+ s")
    # The history chart of requests per second has a line now.
    assert page.wait_js("document.querySelectorAll('#c-rps polyline').length > 0")
    workers = page("texts", sel="#workers tbody tr")
    assert len(workers) == 2 and all("alive" in w for w in workers)

    # A rate-limit rejection (a key allowed one request a minute, asked twice) reaches the panel.
    rejections = int(page.text("#v-rejections").replace(",", ""))
    admin = {"Authorization": f"Bearer {MASTER}"}
    key = httpx.post(
        dash.base_url + "/admin/keys",
        json={"name": "one-a-minute", "rpm": 1, "max_concurrent": None, "daily_tokens": None},
        headers=admin,
        timeout=10,
    ).json()
    limited = dash.client(key["key"])
    limited.chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": "two"}])
    wait_until(lambda: int(page.text("#v-rejections").replace(",", "")) >= rejections + 1, 30, "rejections to rise")
    page.screenshot("dashboard-live")


@needs_keys
def test_create_and_revoke_a_key(page: Browser, dash: Gateway) -> None:
    log_in(page, dash)
    name = f"team-{int(time.time() * 1000) % 100000}"
    page("fill", sel="#key-name", value=name)
    page("fill", sel="#key-form input[name=rpm]", value="30")
    page("click", sel="#key-create")
    page("wait_visible", sel="#new-key")
    secret = page.text("#new-key-secret")
    assert secret.startswith("sk-") and page.text("#new-key-name") == name
    page("click", sel="#copy-key")
    page.wait_text("#copy-state", "copied")
    assert page("clipboard") == secret
    row = page.wait_text("#keys-table tbody", name)
    assert "30" in row
    page.screenshot("dashboard-key-created")

    # The secret works on /v1 and shows up in today's usage.
    answer = dash.client(secret).chat.completions.create(
        model="decopy-deepseek-v3", messages=[{"role": "user", "content": "hello from a team key"}]
    )
    assert answer.choices[0].message.content
    key_id = page(
        "eval",
        expr=f"[...document.querySelectorAll('#keys-table tbody tr')]"
        f".find(r => r.cells[0].innerText === {json.dumps(name)}).dataset.keyId",
    )
    sel = f'#keys-table tr[data-key-id="{key_id}"]'
    wait_until(lambda: page.text(f"{sel} td:nth-child(6)") == "1", 20, "today's requests of the new key")

    page("click", sel=f"{sel} button.revoke")
    page.wait_text(f"{sel} button.revoke", "^Confirm revoke$")
    page("click", sel=f"{sel} button.revoke")
    page.wait_js(f"document.querySelector('{sel}') === null")
    with pytest.raises(openai.AuthenticationError):
        dash.client(secret).chat.completions.create(
            model="decopy-deepseek-v3", messages=[{"role": "user", "content": "still there?"}]
        )
    listed = httpx.get(dash.base_url + "/admin/keys", headers={"Authorization": f"Bearer {MASTER}"}).json()
    assert key_id not in [k["id"] for k in listed["data"]]


def test_try_it_streams_through_the_gateway(page: Browser, dash: Gateway, tag: str) -> None:
    log_in(page, dash)
    page("select", sel="#try-model", value="decopy-gpt-4o-mini")
    pieces = ["Streaming ", "one ", "piece ", "at ", "a ", "time."]
    message = f"{tag}\n" + directive(reply=pieces, interval_ms=400)
    page("fill", sel="#try-message", value=message)
    page("click", sel="#try-send")
    # Part of the answer is on the page while the rest is still coming: it streams.
    partial = page.wait_text("#try-output", "^Streaming one")
    assert partial != "".join(pieces)
    assert not page.text("#try-status").startswith("done")
    page.wait_text("#try-status", "^done: first token after", timeout=30)
    assert page.text("#try-output") == "".join(pieces)
    page.screenshot("dashboard-try-it")
    entries = dash.sim_entries(tag)
    assert [e["model"] for e in entries if e["kind"] == "create"] == ["GPT-4o-mini"]
    assert any(r["url"].endswith("/dashboard/api/chat") for r in page("requests"))


def test_doctor_runs_in_a_worker_and_names_the_failure(page: Browser, dash: Gateway) -> None:
    log_in(page, dash)
    httpx.post(dash.sim_url + "/_sim/default", json={"create_fail": "429"}, timeout=5).raise_for_status()
    try:
        page("click", sel="#doctor-run")
        summary = page.wait_text("#doctor-summary", "^FAILED at create-job", timeout=30)
        assert "rate limited (HTTP 429)" in summary and "dashboard on" in summary
        row = page.text('#doctor-steps tr[data-step="create-job"]')
        assert row.startswith("FAIL") and "Too many requests" in row
        page.screenshot("dashboard-doctor-failed")
    finally:
        httpx.post(dash.sim_url + "/_sim/default", json={}, timeout=5).raise_for_status()
    page.wait_js("!document.querySelector('#doctor-run').disabled")
    page("click", sel="#doctor-run")
    assert page.wait_text("#doctor-summary", "^OK: an answer streamed end to end", timeout=30)
    assert page.text('#doctor-steps tr[data-step="stream"]').startswith("ok")


def test_upstreams_panel_shows_breakers_and_saves_a_route(page: Browser, dash: Gateway, tag: str) -> None:
    """One row per target with its breaker; a route saved from the page serves at once."""
    log_in(page, dash)
    row = page.wait_text('#targets-table tr[data-target="decopy/DeepSeek-V3"]', "closed")
    assert row.startswith("decopy/DeepSeek-V3") and "decopy" in row
    assert "decopy-deepseek-v3 (default)" in page.wait_text("#routes-table tbody", "decopy/DeepSeek-V3")
    route = f"r-{tag}"
    page("fill", sel="#route-id", value=route)
    page("fill", sel="#route-targets", value="decopy/GPT-4o-mini")
    page("click", sel="#route-save")
    assert "decopy/GPT-4o-mini" in page.wait_text(f'#routes-table tr[data-route="{route}"]', "GPT-4o-mini")
    page.screenshot("dashboard-upstreams")
    # the route serves (a live change: no restart)
    with dash.http() as http:
        answer = http.post(
            "/v1/chat/completions", json={"model": route, "messages": [{"role": "user", "content": f"{tag} hi"}]}
        )
        assert answer.status_code == 200 and answer.headers["x-gateway-upstream"] == "decopy/GPT-4o-mini"
        # a failed target shows its failure (a 500 from decopy, the route's only target)
        failed = http.post(
            "/v1/chat/completions",
            json={"model": route, "messages": [{"role": "user", "content": directive(create_fail="500")}]},
        )
        assert failed.status_code == 502
    cell = page.wait_text('#targets-table tr[data-target="decopy/GPT-4o-mini"] td.verdict', "HTTP 500", timeout=20)
    assert "create-job" in cell
    # deleting the stored route takes it off the table
    page("click", sel=f'#routes-table tr[data-route="{route}"] button')
    page.wait_js(f"document.querySelector('#routes-table tr[data-route=\"{route}\"]') === null")

    # an upstream added from the page: a key pasted where its variable's name belongs is refused
    page("fill", sel="#upstream-name", value=f"u-{tag}")
    page("fill", sel="#upstream-url", value="http://127.0.0.1:9/v1")
    page("fill", sel="#upstream-key-env", value="sk-live-1234")
    page("click", sel="#upstream-add")
    assert "NAME of an environment variable" in page.wait_text("#upstream-error", "NAME")
    page("fill", sel="#upstream-key-env", value="LOCAL_LLM_KEY")
    page("click", sel="#upstream-add")
    row = page.wait_text(f'#upstreams-table tr[data-upstream="u-{tag}"]', "LOCAL_LLM_KEY")
    assert "http://127.0.0.1:9/v1" in row and "openai" in row
    page("click", sel=f'#upstreams-table tr[data-upstream="u-{tag}"] button')
    gone = f"#upstreams-table tr[data-upstream='u-{tag}']"
    page.wait_js(f'document.querySelector("{gone}") === null')


def test_readable_at_phone_width(browser: Browser, dash: Gateway) -> None:
    browser.new_page(width=390, height=844)
    log_in(browser, dash)
    # Nothing wider than the screen: the page does not scroll sideways (wide tables scroll inside).
    assert browser("eval", expr="document.documentElement.scrollWidth") <= 390
    browser.screenshot("dashboard-phone")
