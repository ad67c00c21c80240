"""decopy through curl_cffi (``DECOPY_TRANSPORT=curl_cffi``) against the simulator: over HTTP, over
HTTPS with a local CA (trustme), through an http and a socks5 proxy, and in a whole gateway."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from devtools.procs import Stack, wait_for
from shared.messages import ChatJob
from shared.settings import Settings
from tests.conftest import Gateway, directive
from tests.proxy import Proxy
from worker.upstream.base import UpstreamFailure
from worker.upstream.decopy.curl_transport import CurlDecopyUpstream

FAKE_HOST = "decopy-sim.invalid"


def job(text: str) -> ChatJob:
    return {
        "request_id": "r",
        "model": "decopy-deepseek-v3",
        "upstream_model": "DeepSeek-V3",
        "prompt": text,
        "image": None,
    }


def answer(settings: Settings, text: str) -> str:
    async def run() -> str:
        upstream = CurlDecopyUpstream(settings)
        try:
            return "".join([p async for batch in upstream.pieces(job(text)) for p in batch])
        finally:
            await upstream.aclose()

    return asyncio.run(run())


def entries(sim: str, tag: str) -> list[dict[str, Any]]:
    log = httpx.get(sim + "/_sim/log", timeout=5, verify=False).json()
    ours = {e["job_id"] for e in log if e["kind"] == "create" and tag in (e["entertext"] or "") and e["job_id"]}
    return [e for e in log if (e["kind"] == "create" and tag in (e["entertext"] or "")) or e["job_id"] in ours]


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    stack = Stack()
    try:
        yield stack.simulator()[1]
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The simulator over https with a certificate from a local CA; yields its URL and the CA's PEM."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("tls")
    ca_pem, cert_pem, key_pem = where / "ca.pem", where / "cert.pem", where / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(cert_pem), append=True)
    stack = Stack()
    try:
        proc = stack.spawn(
            "tls-sim",
            [
                sys.executable,
                "-m",
                "tests.decopy_sim",
                "--port",
                "0",
                "--certfile",
                str(cert_pem),
                "--keyfile",
                str(key_pem),
            ],
        )
        url = ""

        def ready() -> bool:
            nonlocal url
            for line in proc.log().splitlines():
                if line.startswith("SIM_READY "):
                    url = line.split(" ", 1)[1].strip()
            return bool(url)

        wait_for(ready, 15, "https simulator", proc.popen)
        yield url, ca_pem
    finally:
        stack.stop()


def test_curl_cffi_streams_over_http_as_a_browser(sim: str, tag: str) -> None:
    text = answer(Settings(decopy_base_url=sim), f"{tag} {directive(reply=['Hel', 'lo', ' world'])}")
    assert text == "Hello world"
    create, stream = entries(sim, tag)
    # the session's identity is sent (its headers), and curl_cffi adds the browser's own headers
    for entry in (create, stream):
        assert entry["headers"]["product-code"] == Settings().decopy_product_code
        assert entry["headers"]["user-agent"] == Settings().decopy_user_agent
        assert "sec-ch-ua" in entry["headers"]  # what curl_cffi's Chrome impersonation sends
    assert stream["outcome"] == "ok"


def test_curl_cffi_failures_are_typed_like_aiohttps(sim: str, tag: str) -> None:
    for mode, kind in (("cloudflare", "cloudflare"), ("429", "rate_limited"), ("500", "http")):
        with pytest.raises(UpstreamFailure) as exc:
            answer(Settings(decopy_base_url=sim), f"{tag}-{mode} {directive(create_fail=mode)}")
        assert exc.value.kind == kind, exc.value.message
    with pytest.raises(UpstreamFailure) as exc:
        answer(Settings(decopy_base_url=sim), f"{tag}-cut {directive(stream_fail='cut', after=2, n=5)}")
    assert exc.value.kind == "connection" and "Connection broken" in exc.value.message
    with pytest.raises(UpstreamFailure) as exc:
        answer(Settings(decopy_base_url=sim), f"{tag}-tr {directive(stream_fail='truncate', truncate_after=2, n=5)}")
    assert exc.value.kind == "protocol" and "truncated" in exc.value.message


def test_curl_cffi_over_https_trusts_the_configured_ca(
    tls_sim: tuple[str, Path], tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_pem = tls_sim
    with pytest.raises(UpstreamFailure) as exc:  # not trusted: the certificate is refused
        answer(Settings(decopy_base_url=url), f"{tag}-untrusted")
    assert exc.value.kind == "connection"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_pem))  # what the sessions (and so curl) trust
    assert answer(Settings(decopy_base_url=url), f"{tag} {directive(reply=['over ', 'tls'])}") == "over tls"


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy("curl", hosts={FAKE_HOST: "127.0.0.1"}).start()
    yield p
    p.stop()


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_curl_cffi_through_a_proxy(sim: str, proxy: Proxy, tag: str, scheme: str) -> None:
    """The upstream's host name exists only for the proxy: an answer proves the calls went through it."""
    port = sim.rsplit(":", 1)[1]
    settings = Settings(decopy_base_url=f"http://{FAKE_HOST}:{port}", decopy_proxy=proxy.url(scheme))
    assert answer(settings, f"{tag} {directive(reply=['via ', 'proxy'])}") == "via proxy"
    if scheme == "http":
        assert proxy.http_requests >= 2
        assert all(e["headers"].get("x-via-proxy") == "curl" for e in entries(sim, tag))
    else:
        assert proxy.socks_connects >= 1


def test_a_gateway_with_curl_cffi_answers(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"DECOPY_TRANSPORT": "curl_cffi"}, workers=1)
    stream = gw.client().chat.completions.create(
        model="decopy-deepseek-v3",
        messages=[{"role": "user", "content": f"{tag} {directive(reply=['a', 'b', 'c'])}"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "abc"
    assert "sec-ch-ua" in gw.sim_entries(tag)[0]["headers"]


def doctor_transports(sim: str, **env: str) -> tuple[int, str]:
    import os
    import subprocess

    from devtools.procs import ROOT

    full = {**os.environ, "DECOPY_BASE_URL": sim, "REDIS_URL": "redis://127.0.0.1:1/0", **env}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "doctor", "--transports"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_doctor_transports_says_which_gets_through_and_where_each_stops(sim: str) -> None:
    code, out = doctor_transports(sim)
    assert code == 0, out
    # like every operator command, it says first which Redis and which upstream it talks to
    assert f"Redis redis://127.0.0.1:1/0 · upstream {sim} · settings" in out
    assert "[ ok ] aiohttp" in out and "[ ok ] curl_cffi" in out
    assert "DECOPY_TRANSPORT=aiohttp (in use) gets through; so does curl_cffi" in out
    # curl_cffi unusable (a browser it does not know): it stops at once, aiohttp still gets through
    code, out = doctor_transports(sim, DECOPY_IMPERSONATE="netscape4", DECOPY_TRANSPORT="curl_cffi")
    assert code == 0, out
    assert "[FAIL] curl_cffi" in out and "stopped at client" in out and "netscape4" in out
    assert "use DECOPY_TRANSPORT=aiohttp: DECOPY_TRANSPORT=curl_cffi (in use) does not get through" in out
    # both stopped by a Cloudflare page cloudscraper cannot solve: where, and what the upstream said
    httpx.post(sim + "/_sim/default", json={"create_fail": "cloudflare"}, timeout=5)
    try:
        code, out = doctor_transports(sim)
    finally:
        httpx.post(sim + "/_sim/default", json={}, timeout=5)
    assert code == 1, out
    assert out.count("stopped at cloudflare") == 2 and "upstream answered HTTP 403" in out
    assert "no transport got through" in out


def test_curl_cffi_keeps_the_sessions_cookies_both_ways(sim: str, tag: str) -> None:
    """The session's cookies go out with curl_cffi's calls, and a cookie an answer sets (decopy's
    ``__cf_bm``) goes back into the session for the next call; curl_cffi's own jar is not used."""

    async def run() -> list[dict[str, str]]:
        upstream = CurlDecopyUpstream(Settings(decopy_base_url=sim))
        try:
            session = upstream.pool.acquire()
            session.cookies.set("cf_clearance", "granted")
            upstream.pool.release(session, broken=False)
            text = "".join([p async for b in upstream.pieces(job(f"{tag} {directive(reply=['one'])}")) for p in b])
            assert text == "one"
            assert "__cf_bm" in {c.name for c in session.cookies}
            return [e["headers"] for e in entries(sim, tag)]
        finally:
            await upstream.aclose()

    headers = asyncio.run(run())
    assert len(headers) == 2 and all("cf_clearance=granted" in h.get("cookie", "") for h in headers)
    assert "__cf_bm=" not in headers[0].get("cookie", "")  # create-job's answer set it...
    assert "__cf_bm=" in headers[1]["cookie"]  # ...and get-job sent it back


def test_curl_cffi_hands_a_solvable_challenge_to_cloudscraper(
    sim: str, tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with aiohttp (tests/test_upstream_client.py): cloudscraper's check is made to call the
    simulator's challenge page solvable; cloudscraper's own session then sends create-job again."""
    from cloudscraper.cloudflare import Cloudflare

    def solvable(self: Cloudflare, resp: Any) -> bool:
        return bool(resp.headers.get("cf-mitigated") == "challenge")

    monkeypatch.setattr(Cloudflare, "is_Challenge_Request", solvable)
    text = f"{tag} " + directive(create_fail="cloudflare", times=1, key=tag, reply=["solved ", "then streamed"])
    assert answer(Settings(decopy_base_url=sim), text) == "solved then streamed"
    creates = [e for e in entries(sim, tag) if e["kind"] == "create"]
    assert [e["outcome"] for e in creates] == ["failed:cloudflare", "ok"]
    assert "sec-ch-ua" in creates[0]["headers"]  # the first by curl_cffi
    assert "sec-ch-ua" not in creates[1]["headers"]  # the second by cloudscraper (requests)
