"""What the documentation promises about plain HTTP answers, held to it.

A ``Content-Type: text/plain`` body is refused (415) as the error table says; a 405 names the
methods that would work (``Allow``); every 400 carries a ``code`` a client can branch on; the
browser's ``/favicon.ico`` is served (not a 404 on every dashboard load); the login form's label
reads as one line; the dashboard's "Try it" chats count in the cluster's request total.
"""

from __future__ import annotations

import json

import pytest

from shared.telemetry import running_sums
from tests.conftest import Gateway, assert_openai_error

MODEL = "decopy-deepseek-v3"
CHAT = "/v1/chat/completions"


def test_json_sent_as_text_plain_is_415(gateway: Gateway) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    with gateway.http() as http:
        resp = http.post(CHAT, content=body, headers={"Content-Type": "text/plain"})
        err = assert_openai_error(resp, 415, "unsupported_media_type")
        assert "application/json" in err["message"]
        # The same body as JSON, or with no Content-Type at all, is taken.
        assert http.post(CHAT, content=body, headers={"Content-Type": "application/json"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", CHAT, {"POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("DELETE", "/dashboard/login", {"GET", "HEAD", "POST"}),  # two routes on one path: both named
        ("POST", "/v1/models", {"GET", "HEAD"}),
    ],
)
def test_405_names_the_allowed_methods(gateway: Gateway, method: str, path: str, allowed: set[str]) -> None:
    with gateway.http() as http:
        resp = http.request(method, path)
    err = assert_openai_error(resp, 405, "method_not_allowed")
    assert {m.strip() for m in resp.headers["allow"].split(",")} == allowed
    assert all(m in err["message"] for m in allowed)


@pytest.mark.parametrize(
    ("messages", "extra", "param"),
    [
        ([{"role": "user", "content": ""}], {}, "messages"),  # nothing to send
        ([{"role": "system", "content": "be brief"}], {}, "messages"),  # no user message
        ([{"role": "user", "content": "hi"}], {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_every_400_has_a_code(
    gateway: Gateway, messages: list[dict[str, str]], extra: dict[str, object], param: str
) -> None:
    with gateway.http() as http:
        resp = http.post(CHAT, json={"model": MODEL, "messages": messages, **extra})
    err = assert_openai_error(resp, 400)
    assert err["param"] == param
    assert isinstance(err["code"], str) and err["code"], err


def test_favicon_is_served(gateway: Gateway) -> None:
    with gateway.http() as http:
        resp = http.get("/favicon.ico")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/x-icon"
    assert resp.content[:4] == b"\x00\x00\x01\x00"  # an ICO header: one image follows


def test_login_label_is_one_line_of_text(gateway: Gateway) -> None:
    with gateway.http() as http:
        page = http.get("/dashboard/login").text  # disabled without a master key, but the form is the same
    assert '<label for="key">Master key</label>' in page
    assert '<link rel="icon" href="/favicon.ico">' in page


def test_try_it_counts_in_the_request_total() -> None:
    def family(route: str) -> list[object]:
        return ["decopy_requests", "counter", "", [["decopy_requests_total", {"route": route, "status": "200"}, 2.0]]]

    sums, _ = running_sums([family("/v1/chat/completions"), family("/dashboard/api/chat"), family("/healthz")])
    assert sums["requests"] == 4.0
