"""Open mode is not a CSRF hole: without a master key, a web page of another origin cannot spend
the gateway, through a real API.

Before: with no API_MASTER_KEY (allowed on loopback), a ``text/plain`` POST from a foreign page
(``Origin: https://evil.example``), which a browser sends without a CORS preflight, ran a chat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Gateway, assert_openai_error, start_gateway

BODY = json.dumps({"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def open_gw() -> Iterator[Gateway]:
    gateway = start_gateway({"CORS_ALLOW_ORIGINS": "https://app.example,http://localhost:5173"}, workers=1)
    try:
        yield gateway
    finally:
        gateway.stop()


def simple_post(gw: Gateway, content_type: str = "text/plain", **headers: str) -> httpx.Response:
    """What a foreign page's fetch() or form can send without a preflight: text/plain, no key."""
    return httpx.post(
        gw.v1 + "/chat/completions", content=BODY, headers={"Content-Type": content_type, **headers}, timeout=30
    )


def json_post(gw: Gateway, **headers: str) -> httpx.Response:
    """What an allowed page (after its preflight) or a client that is not a browser sends."""
    return simple_post(gw, "application/json", **headers)


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://app.example.evil.example"])
def test_a_foreign_page_is_refused(open_gw: Gateway, origin: str) -> None:
    resp = simple_post(open_gw, Origin=origin)
    err = assert_openai_error(resp, 403, "cross_origin_refused")
    assert "CORS_ALLOW_ORIGINS" in err["message"]


@pytest.mark.parametrize("origin", [None, "https://app.example", "http://localhost:5173"])
def test_clients_without_origin_and_allowed_pages_are_served(open_gw: Gateway, origin: str | None) -> None:
    resp = json_post(open_gw, **({"Origin": origin} if origin else {}))
    assert resp.status_code == 200, resp.text


def test_a_page_of_the_gateway_itself_is_served(open_gw: Gateway) -> None:
    assert json_post(open_gw, Origin=open_gw.base_url).status_code == 200


def test_a_text_plain_body_is_refused_even_without_origin(open_gw: Gateway) -> None:
    """The second barrier: the body type a page may send without a preflight is never read."""
    assert simple_post(open_gw).status_code == 415


def test_by_default_every_foreign_page_is_refused(gateway: Gateway) -> None:
    """The shared gateway runs open with CORS_ALLOW_ORIGINS unset: no foreign page at all."""
    assert_openai_error(simple_post(gateway, Origin="https://app.example"), 403, "cross_origin_refused")
    assert json_post(gateway).status_code == 200
