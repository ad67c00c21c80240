"""Upstream sessions read the environment once, and still honour it as requests would."""

from __future__ import annotations

import pytest
import requests

from worker.upstream.decopy.client import freeze_environment

URL = "https://api.decopy.ai"

ENVIRONMENTS = [
    {},
    {"HTTPS_PROXY": "http://proxy.example:3128"},
    {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "api.decopy.ai"},
    {"ALL_PROXY": "socks5://proxy.example:1080", "NO_PROXY": "other.example"},
    {"REQUESTS_CA_BUNDLE": "/etc/ssl/custom.pem"},
    {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem"},
]


def _effective(session: requests.Session) -> dict[str, object]:
    """What one request of ``session`` to URL would use (requests' own merge)."""
    settings = session.merge_environment_settings(URL + "/api/x", dict(session.proxies), None, session.verify, None)
    proxies = requests.utils.resolve_proxies(
        requests.Request("GET", URL).prepare(), settings["proxies"], session.trust_env
    )
    return {"proxy": requests.utils.select_proxy(URL + "/api/x", proxies), "verify": settings["verify"]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_frozen_session_uses_what_requests_would(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    live, frozen = requests.Session(), requests.Session()
    freeze_environment(frozen, URL)
    assert frozen.trust_env is False  # no environment walk per request any more
    assert _effective(frozen) == _effective(live)
    live.close()
    frozen.close()


def test_explicit_proxy_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env.example:3128")
    session = requests.Session()
    freeze_environment(session, URL)
    session.proxies = {"http": "http://decopy-proxy:8080", "https": "http://decopy-proxy:8080"}  # DECOPY_PROXY
    assert _effective(session)["proxy"] == "http://decopy-proxy:8080"
    session.close()


def test_sessions_share_one_tls_context_set_up_as_cloudscraper_does() -> None:
    import cloudscraper

    from shared.settings import Settings
    from worker.upstream.decopy.client import SessionPool

    pool = SessionPool(Settings())
    first, second = pool.acquire(), pool.acquire()  # two at once: two sessions
    assert first is not second and first.cookies is not second.cookies
    ctx = first.adapters["https://"].ssl_context  # type: ignore[attr-defined]  # cloudscraper's adapter
    assert second.adapters["https://"].ssl_context is ctx  # type: ignore[attr-defined]
    own = cloudscraper.create_scraper(browser={"browser": "chrome", "platform": "windows", "mobile": False})
    reference = own.adapters["https://"].ssl_context
    assert [c["name"] for c in ctx.get_ciphers()] == [c["name"] for c in reference.get_ciphers()]
    assert (ctx.minimum_version, ctx.maximum_version, ctx.verify_mode) == (
        reference.minimum_version,
        reference.maximum_version,
        reference.verify_mode,
    )
    for session in (first, second, own):
        session.close()
