"""The dashboard's request log and per-key waiting, in a real browser (the fixtures of test_dashboard_browser)."""

from __future__ import annotations

import json

import httpx

from tests.browser_driver import Browser
from tests.conftest import Gateway, wait_until
from tests.test_dashboard_browser import MASTER, browser, dash, log_in, page  # noqa: F401  (fixtures)


def test_request_log_table_filters_and_detail(page: Browser, dash: Gateway, tag: str) -> None:  # noqa: F811
    admin = {"Authorization": f"Bearer {MASTER}"}
    key = httpx.post(dash.base_url + "/admin/keys", json={"name": f"log-{tag}"}, headers=admin, timeout=10).json()
    client = dash.client(key["key"])
    for i in range(3):
        client.chat.completions.create(model="decopy-gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} {i}"}])
    wait_until(
        lambda: (
            len(httpx.get(dash.base_url + "/admin/requests", params={"key": key["id"]}, headers=admin).json()["data"])
            == 3
        ),
        15,
        "three entries",
    )
    log_in(page, dash)
    page("fill", sel="#req-key", value=f"log-{tag}")
    page("select", sel="#req-status", value="ok")
    page("click", sel="#req-apply")
    page.wait_js("document.querySelectorAll('#req-table tbody tr[data-id]').length === 3")
    rows = page("texts", sel="#req-table tbody tr")
    assert all(f"log-{tag}" in r and "decopy-gpt-4o-mini" in r and "200" in r for r in rows), rows
    page("click", sel="#req-table tbody tr[data-id]:first-child")
    page("wait_visible", sel="#req-detail")
    detail = json.loads(page.text("#req-detail"))
    assert detail["key_id"] == key["id"] and detail["dialect"] == "chat" and "queue_wait_ms" in detail
    assert key["key"] not in page.text("#requests")
    # A filter that matches nothing says so.
    page("select", sel="#req-status", value="error")
    page("click", sel="#req-apply")
    page.wait_text("#req-table tbody", "no requests match")
    page.screenshot("dashboard-requests")
    # The key's three jobs are counted in the live "Waiting by key" table (started over 5 minutes).
    row = page.wait_text(f'#waiting tr[data-key-id="{key["id"]}"]', f"^log-{tag}", timeout=30)
    assert row.split("\t")[-1].strip() == "3", row


def test_weights_are_set_from_the_dashboard(page: Browser, dash: Gateway, tag: str) -> None:  # noqa: F811
    admin = {"Authorization": f"Bearer {MASTER}"}
    key = httpx.post(dash.base_url + "/admin/keys", json={"name": f"w-{tag}"}, headers=admin, timeout=10).json()
    log_in(page, dash)
    row = f'#weights tr[data-key-id="{key["id"]}"]'
    page.wait_text(row, f"^w-{tag}")
    assert page("eval", expr=f"document.querySelector('{row} input.weight').value") == "1"
    page("fill", sel=f"{row} input.weight", value="3")
    page("click", sel=f"{row} button.save-weight")

    def saved() -> bool:
        listed = httpx.get(dash.base_url + "/admin/weights", headers=admin, timeout=10).json()["data"]
        return any(w["key_id"] == key["id"] and w["weight"] == 3 for w in listed)

    wait_until(saved, 10, "the weight to be saved")
    page.wait_text('#weights tr[data-key-id="dashboard"]', "^dashboard")  # the dashboard is a key too
    page("fill", sel=f"{row} input.weight", value="0")
    page("click", sel=f"{row} button.save-weight")
    page.wait_text("#shares-notice", "400")
