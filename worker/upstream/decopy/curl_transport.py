"""decopy's calls sent with curl_cffi: a browser's TLS and HTTP/2 fingerprint (``DECOPY_TRANSPORT=curl_cffi``).

Cloudflare tells a browser from a script by the TLS handshake (cipher and extension order, JA3 /
JA4) and by HTTP/2's settings frames, before it reads a single header. aiohttp and cloudscraper
(``requests``) both look like Python there, whatever their headers say. curl_cffi is libcurl
built with a browser's TLS library and settings (``impersonate``), with an asyncio API, so the
calls stay on the worker's event loop as with aiohttp.

Everything else is the aiohttp path's (:class:`~worker.upstream.decopy.client.DecopyUpstream`):
each call still borrows a cloudscraper session for its identity (headers, cookies among them
Cloudflare's clearance, proxy, trusted CAs), cookies an answer sets go back to that session, and
a Cloudflare challenge cloudscraper can solve is still handed to cloudscraper (in a thread), whose
clearance cookie the next curl_cffi call then sends. Failures are named as the aiohttp path names
them (``ConnectTimeout``, ``ReadTimeout``, ``ConnectionError``, ``Connection broken``), so the
runner's retries, the breakers and the metrics cannot tell the transports apart.

The browser is ``DECOPY_IMPERSONATE`` (``chrome131`` by default, as ``DECOPY_USER_AGENT``). Keep
``DECOPY_USER_AGENT`` the same browser: Cloudflare binds its clearance to the User-Agent, so the
session's User-Agent (the one cloudscraper solved with) is the one sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import requests
from curl_cffi import CurlError
from curl_cffi.requests import AsyncSession, BrowserType
from curl_cffi.requests import exceptions as curl_errors

from shared.errors import ConfigError
from shared.settings import Settings
from worker.upstream.base import UpstreamFailure
from worker.upstream.decopy.client import CREATE_PATH, GET_JOB_PATH, DecopyUpstream, Form, pieces_of
from worker.upstream.decopy.identity import proxy_of, request_headers
from worker.upstream.decopy.parser import PieceParser
from worker.upstream.decopy.transport import ANSWER_LIMIT, Answer, classify_status

log = logging.getLogger("worker.decopy.curl")

#: What a browser's script on decopy.ai sends to its API (a cross-site fetch, not a page load): set
#: over curl_cffi's navigation defaults, some of which are dropped (None).
FETCH_HEADERS: dict[str, str | None] = {
    "Sec-Fetch-Site": "same-site",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
    "Sec-Fetch-User": None,
    "Upgrade-Insecure-Requests": None,
    "Cache-Control": None,
}

#: What curl_cffi raises for a transport failure.
CURL_ERRORS = (curl_errors.RequestException, CurlError, OSError, TimeoutError)


def curl_failure(exc: BaseException, what: str, *, begun: bool = False) -> UpstreamFailure:
    """A curl_cffi failure in the vocabulary of ``transport.exception_failure``."""
    if isinstance(exc, curl_errors.ConnectTimeout):
        return UpstreamFailure("timeout", f"{what}: ConnectTimeout", retryable=True, replace_session=True)
    if isinstance(exc, (curl_errors.Timeout, TimeoutError)):
        return UpstreamFailure("timeout", f"{what}: ReadTimeout", retryable=True, replace_session=True)
    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
    broken = "Connection broken: " if begun else ""
    return UpstreamFailure(
        "connection", f"{what}: ConnectionError: {broken}{detail}", retryable=True, replace_session=True
    )


def _keep_cookies(session: requests.Session, resp: Any) -> None:
    """Cookies the answer set go to the cloudscraper session (never to curl_cffi's own jar)."""
    for cookie in resp.cookies.jar:
        if cookie.value is not None:
            session.cookies.set(cookie.name, cookie.value, path=cookie.path or "/")


class CurlDecopyUpstream(DecopyUpstream):
    """:class:`DecopyUpstream` whose two calls go through curl_cffi (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        browsers = {b.value for b in BrowserType}
        if settings.decopy_impersonate not in browsers:
            raise ConfigError(
                f"DECOPY_IMPERSONATE={settings.decopy_impersonate!r} is not a browser curl_cffi knows "
                f"(e.g. {', '.join(sorted(b for b in browsers if b.startswith('chrome'))[:6])})"
            )
        super().__init__(settings)
        self._curl: AsyncSession[Any] | None = None
        self._impersonate = settings.decopy_impersonate
        self._timeouts = (settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self._max_clients = max(10, settings.worker_concurrency * 2)

    @property
    def curl(self) -> AsyncSession[Any]:
        if self._curl is None:
            # Cookies: the cloudscraper session's, sent in the Cookie header and kept back there;
            # curl_cffi's own jar stays empty (discard_cookies) so identities never mix.
            self._curl = AsyncSession(impersonate=self._impersonate, max_clients=self._max_clients)
        return self._curl

    async def aclose(self) -> None:
        if self._curl is not None:
            await self._curl.close()
            self._curl = None
        await super().aclose()

    def _options(self, session: requests.Session, url: str) -> dict[str, Any]:
        verify = session.verify  # True (certifi), False, or a CA bundle (REQUESTS_CA_BUNDLE)
        return {
            "proxy": proxy_of(session, url),
            "verify": verify if isinstance(verify, (bool, str)) else True,
            "timeout": self._timeouts,
            "discard_cookies": True,
            # HTTP/2 over TLS (ALPN), HTTP/1.1 in clear text, as a browser: no h2c upgrade
            "http_version": "v2tls",
        }

    @staticmethod
    def _headers(session: requests.Session, extra: dict[str, str]) -> dict[str, str | None]:
        return {**FETCH_HEADERS, **request_headers(session, extra)}

    async def post_create_job(self, session: requests.Session, form: Form) -> Answer:
        url = self._base + CREATE_PATH
        body, content_type = form
        headers = self._headers(session, {"Content-Type": content_type})
        try:
            resp = await self.curl.request(
                "POST", url, content=body, headers=headers, allow_redirects=True, **self._options(session, url)
            )
        except CURL_ERRORS as exc:
            raise curl_failure(exc, "create-job") from exc
        _keep_cookies(session, resp)
        return Answer.of(resp.status_code, resp.headers, resp.content[:ANSWER_LIMIT])

    async def read_pieces(
        self, session: requests.Session, ticket: str, parser: PieceParser | None = None
    ) -> AsyncIterator[list[str]]:
        what = "get-job"
        url = self._base + GET_JOB_PATH + ticket
        headers = self._headers(session, {"Accept": "text/event-stream", "Accept-Encoding": "identity"})
        try:
            resp = await self.curl.request("GET", url, headers=headers, stream=True, **self._options(session, url))
        except CURL_ERRORS as exc:
            raise curl_failure(exc, what) from exc
        try:
            _keep_cookies(session, resp)
            ctype = resp.headers.get("content-type", "") or ""
            if resp.status_code != 200 or "json" in ctype or "html" in ctype:
                answer = Answer.of(resp.status_code, resp.headers, await self._read_whole(resp))
                failure = classify_status(answer, what)
                if resp.status_code == 200 and failure.kind != "cloudflare":
                    failure = UpstreamFailure(
                        "protocol",
                        f"{what}: expected an event stream, got {ctype}: {failure.body or ''}",
                        retryable=True,
                        status=200,
                        body=failure.body,
                    )
                raise failure
            chunks = resp.aiter_content()

            async def read() -> bytes:
                try:
                    return await anext(chunks, b"")
                except CURL_ERRORS as exc:
                    raise curl_failure(exc, what, begun=True) from exc

            async for deltas in pieces_of(read, parser or PieceParser(), what):
                yield deltas
        finally:
            await resp.aclose()  # whatever ended the loop: a stream not read to its end is let go at once

    @staticmethod
    async def _read_whole(resp: Any) -> bytes:
        out = bytearray()
        try:
            async for chunk in resp.aiter_content():
                out.extend(chunk)
                if len(out) >= ANSWER_LIMIT:
                    break
        except CURL_ERRORS:
            pass  # judged on what did arrive
        return bytes(out)
