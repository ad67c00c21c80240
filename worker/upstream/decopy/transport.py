"""How the decopy client's calls travel: aiohttp on the worker's event loop, and what comes back.

Each call is sent with aiohttp under a cloudscraper session's identity (its headers, cookies,
proxy and TLS context: :mod:`worker.upstream.decopy.identity`). Why not cloudscraper for every
call: ``requests`` is synchronous, so each call ran in a thread and every piece of an answer woke
that thread, took the GIL and woke the event loop, through urllib3 and ``http.client``'s chunked
decoding: 0.34 ms of CPU per piece and ~3.3 ms per job (``make bench``, docs/benchmark.md "Where
the time goes"), about half the gateway's CPU per answer. On the event loop with aiohttp's C
parser each piece is one callback and one read.

Outbound proxies (``DECOPY_PROXY``): http and https proxies through aiohttp's own support,
socks4/4a/5/5h through aiohttp-socks (a connector per proxy). Failures are described in one
vocabulary whatever the client (aiohttp, or requests while a challenge is solved):
``ConnectTimeout``, ``ReadTimeout``, ``ConnectionError`` and ``Connection broken`` (the answer
cut off after it began).
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import cloudscraper
import orjson
import requests
import urllib3.exceptions
from aiohttp_socks import ProxyConnector, ProxyType
from requests.structures import CaseInsensitiveDict

from shared.settings import Settings
from worker.upstream.base import UpstreamFailure, trim
from worker.upstream.decopy.fence import no_silent_retry

BODY_LIMIT = 4000  # characters of an answer kept for messages and the doctor
ANSWER_LIMIT = 1 << 20  # bytes of a whole (non-stream) answer read at most


@dataclass(frozen=True)
class Answer:
    """An HTTP answer that is not an event stream, read whole (at most ``BODY_LIMIT`` characters kept)."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    text: str
    body: bytes = b""

    @classmethod
    def of(cls, status: int, headers: Mapping[str, str], body: bytes) -> Answer:
        """An answer read whole (``body``), its text decoded and kept to ``BODY_LIMIT`` characters."""
        return cls(status, headers, body.decode("utf-8", "replace")[:BODY_LIMIT], body)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def as_requests_response(self, url: str) -> requests.Response:
        """The same answer as a ``requests`` response: what cloudscraper's challenge checks read."""
        resp = requests.Response()
        resp.status_code = self.status
        resp.headers = CaseInsensitiveDict(self.headers)
        resp.raw = io.BytesIO(self.body)  # requests' public way in: ``content`` reads it once
        resp.encoding = "utf-8"
        resp.url = url
        return resp


def is_cloudflare(answer: Answer) -> bool:
    body = answer.text
    return (
        answer.headers.get("cf-mitigated", "").lower() == "challenge"
        or "Just a moment" in body
        or "cf-chl" in body
        or "Attention Required! | Cloudflare" in body
    )


def classify_status(answer: Answer, what: str) -> UpstreamFailure:
    """The failure a non-200 (or challenge) answer stands for."""
    status, body = answer.status, answer.text
    if status in (403, 503) and is_cloudflare(answer) or (status == 200 and is_cloudflare(answer)):
        return UpstreamFailure(
            "cloudflare",
            f"{what}: Cloudflare challenge (HTTP {status})",
            retryable=True,
            status=status,
            body=trim(body),
            replace_session=True,
        )
    if status == 429:
        return UpstreamFailure(
            "rate_limited", f"{what}: rate limited (HTTP 429)", retryable=True, status=status, body=trim(body)
        )
    retryable = status >= 500 or status in (403, 408, 425)
    return UpstreamFailure(
        "http",
        f"{what}: HTTP {status}: {trim(body, 120)}",
        retryable=retryable,
        status=status,
        body=trim(body),
        replace_session=status == 403,
    )


def exception_failure(exc: BaseException, what: str, *, begun: bool = False) -> UpstreamFailure:
    """A transport failure, named the same whichever client met it (aiohttp or requests)."""
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, requests.ConnectTimeout)):
        return UpstreamFailure("timeout", f"{what}: ConnectTimeout", retryable=True, replace_session=True)
    if isinstance(exc, (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)):
        return UpstreamFailure("timeout", f"{what}: ReadTimeout", retryable=True, replace_session=True)
    if isinstance(exc, cloudscraper.exceptions.CloudflareException):
        return UpstreamFailure("cloudflare", f"{what}: {exc}", retryable=True, replace_session=True)
    detail = trim(str(exc), 160) or type(exc).__name__
    if begun or isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamFailure(
            "connection", f"{what}: ConnectionError: Connection broken: {detail}", retryable=True, replace_session=True
        )
    return UpstreamFailure("connection", f"{what}: ConnectionError: {detail}", retryable=True, replace_session=True)


#: What a transport failure can raise, whichever client.
TRANSPORT_ERRORS = (
    aiohttp.ClientError,
    TimeoutError,
    OSError,
    ValueError,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    cloudscraper.exceptions.CloudflareException,
)


_SOCKS = {
    "socks5": (ProxyType.SOCKS5, False),
    "socks5h": (ProxyType.SOCKS5, True),
    "socks4": (ProxyType.SOCKS4, False),
    "socks4a": (ProxyType.SOCKS4, True),
}


class Transport:
    """aiohttp client sessions of one worker process (on its event loop): one for direct calls
    and http(s) proxies (given per request), one per socks proxy (aiohttp-socks connectors)."""

    def __init__(self, settings: Settings, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.upstream_connect_timeout, sock_read=settings.upstream_read_timeout
        )
        self._clients: dict[str | None, aiohttp.ClientSession] = {}

    def client(self, proxy: str | None) -> tuple[aiohttp.ClientSession, str | None]:
        """The client session for a call through ``proxy``, and the ``proxy=`` it takes."""
        scheme = urlsplit(proxy).scheme.lower() if proxy else ""
        key = proxy if scheme in _SOCKS else None
        client = self._clients.get(key)
        if client is None:
            connector: aiohttp.BaseConnector
            if key is not None:
                parts = urlsplit(key)
                proxy_type, rdns = _SOCKS[scheme]
                connector = ProxyConnector(
                    proxy_type=proxy_type,
                    host=parts.hostname or "",
                    port=parts.port or 1080,
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password else None,
                    rdns=rdns,
                    ssl=self._ssl,
                    limit=0,
                )
            else:
                connector = aiohttp.TCPConnector(ssl=self._ssl, limit=0, ttl_dns_cache=60)
            client = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # cookies: the session's
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
            no_silent_retry(client)  # the runner's retries are the one retry policy
            self._clients[key] = client
        return client, (None if key is not None else proxy)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


async def read_answer(resp: aiohttp.ClientResponse, limit: int = ANSWER_LIMIT) -> Answer:
    """The whole answer (up to ``limit`` bytes: decopy's are small; more is not read)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            chunk = await resp.content.read(limit - size)  # what has arrived, however it was split
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except TRANSPORT_ERRORS:
        pass  # judged on what did arrive (a cut answer is not JSON, or not the page it started as)
    return Answer.of(resp.status, resp.headers, b"".join(chunks))
