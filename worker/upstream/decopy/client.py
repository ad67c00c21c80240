"""decopy.ai's "Ask AI" API (see ``../shared/upstream-decopy.md``), on the worker's event loop.

Two calls per answer: ``create-job`` (multipart form) returns a job id; ``get-job/{id}`` streams
the answer as server-sent events ending with ``data: Data transfer completed.``.

Who speaks to decopy: each call borrows a cloudscraper session from the worker's
:class:`SessionPool` (its browser headers, its cookies, among them Cloudflare's clearance, its
proxy, and cloudscraper's TLS settings: a browser's cipher suite) and is sent with aiohttp on
the worker's event loop under that identity. cloudscraper itself (a synchronous ``requests``
session) sends a request only when an answer is a Cloudflare challenge it can solve: it then
repeats the call in a thread, solves the challenge and keeps the clearance cookie in the
session, where the next calls find it. A challenge it cannot solve (Cloudflare's managed and
captcha challenges) fails the attempt and the session is replaced, as before.

Why not cloudscraper for every call: ``requests`` is synchronous, so each call ran in a thread
and every piece of an answer woke that thread, took the GIL and woke the event loop, through
urllib3 and ``http.client``'s chunked decoding: 0.34 ms of CPU per piece and ~3.3 ms per job
(``make bench``, docs/benchmark.md "Where the time goes"), about half the gateway's CPU per answer. On the
event loop with aiohttp's C parser each piece is one callback and one read.

Outbound proxies (``DECOPY_PROXY``): http and https proxies through aiohttp's own support,
socks4/4a/5/5h through aiohttp-socks (a connector per proxy). Failures are described in one
vocabulary whatever the client: ``ConnectTimeout``, ``ReadTimeout``, ``ConnectionError`` and
``Connection broken`` (the answer cut off after it began).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aiohttp
import certifi
import cloudscraper
import orjson
import requests
import urllib3
import urllib3.exceptions
from aiohttp_socks import ProxyConnector, ProxyType
from cloudscraper.cloudflare import Cloudflare
from requests.structures import CaseInsensitiveDict

from shared.messages import ChatJob
from shared.settings import Settings, proxy_urls
from worker.upstream.base import Call, UpstreamFailure
from worker.upstream.decopy import interruptible
from worker.upstream.decopy.parser import StreamParser, UnreadablePiece

log = logging.getLogger("worker.decopy")

OK_CODE = 100000
CREATE_PATH = "/api/decopy/ask-ai/create-job"
STREAM_PATH = "/api/decopy/ask-ai/get-job/"
BODY_LIMIT = 4000  # characters of an answer kept for messages and the doctor
ANSWER_LIMIT = 1 << 20  # bytes of a whole (non-stream) answer read at most

#: create-job's multipart body and its content type.
Form = tuple[bytes, str]


def _trim(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


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
        resp._content = self.body  # noqa: SLF001  (how requests holds a body it has read)
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
            body=_trim(body),
            replace_session=True,
        )
    if status == 429:
        return UpstreamFailure(
            "rate_limited", f"{what}: rate limited (HTTP 429)", retryable=True, status=status, body=_trim(body)
        )
    retryable = status >= 500 or status in (403, 408, 425)
    return UpstreamFailure(
        "http",
        f"{what}: HTTP {status}: {_trim(body, 120)}",
        retryable=retryable,
        status=status,
        body=_trim(body),
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
    detail = _trim(str(exc), 160) or type(exc).__name__
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


def freeze_environment(session: requests.Session, url: str) -> None:
    """Take once what requests reads from the environment on every request, then stop it reading.

    With ``trust_env`` on, each request walks all of ``os.environ`` (proxies, twice), ``NO_PROXY``,
    ``~/.netrc`` and the CA-bundle variables: ~0.2 ms of CPU per request. A worker's environment
    does not change while it runs, and a session calls one base URL, so the answers are the same
    every time: resolved here for ``url`` as requests would. The session's ``proxies`` then say
    which proxy every call of it takes, through aiohttp or cloudscraper alike.
    """
    if not session.trust_env:
        return
    session.proxies.update(requests.utils.get_environ_proxies(url))  # empty when NO_PROXY covers url
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    if session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False


class SessionPool:
    """cloudscraper sessions of one worker process: one per upstream call in flight."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[requests.Session] = []
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None  # shared by every session (see _new)
        self._trusted = False
        self._verify: bool | str = True  # requests' ``verify`` of the sessions (the environment's)
        # Each new session takes the next proxy, so sessions (and a session replaced after a ban)
        # spread over all of them; each process starts at a random one so that a pool of
        # lightly loaded workers does not send everything through the first.
        proxies = proxy_urls(settings.decopy_proxy)  # validated at start-up (Settings.validate)
        if proxies:
            start = random.randrange(len(proxies))
            proxies = proxies[start:] + proxies[:start]
        self._proxies = itertools.cycle(proxies) if proxies else None
        self.created = 0

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """cloudscraper's TLS context (a browser's ciphers and curve, TLS 1.2-1.3), trusting what
        requests would: the system's CAs and certifi's bundle, or ``REQUESTS_CA_BUNDLE`` instead."""
        if self._ssl_context is None:
            self.release(self.acquire(), broken=False)
        assert self._ssl_context is not None
        if not self._trusted:
            # urllib3 loads the session's ``verify`` bundle into the context on every connection
            # it makes; aiohttp does not, so it is loaded once here.
            verify = self._verify
            if verify is not False:
                self._ssl_context.load_verify_locations(certifi.where() if verify is True else verify)
            self._trusted = True
        return self._ssl_context

    def _new(self) -> requests.Session:
        session = cloudscraper.create_scraper(
            browser={"browser": "chrome", "platform": "windows", "mobile": False}, ssl_context=self._ssl_context
        )
        freeze_environment(session, self._settings.decopy_base_url)
        if self._ssl_context is None:
            # cloudscraper builds a TLS context per session (browser ciphers and curve, TLS 1.2-1.3,
            # the system's certificates loaded): 40 ms of CPU, 2 ms with one shared. The cipher
            # suite is the same for every session of this browser; cookies stay per session.
            self._ssl_context = session.adapters["https://"].ssl_context
            self._verify = session.verify
        session.headers.update(
            {
                "Accept": "*/*",
                "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
                "Origin": "https://decopy.ai",
                "Referer": "https://decopy.ai/",
                "product-code": self._settings.decopy_product_code,
                "product-serial": self._settings.decopy_product_serial,
                "User-Agent": self._settings.decopy_user_agent,
            }
        )
        if self._proxies is not None:
            proxy = next(self._proxies)
            session.proxies = {"http": proxy, "https": proxy}
        interruptible.track(session)  # a cancelled challenge call lets go of the upstream at once
        self.created += 1
        # Logged so an operator (and the tests) can see sessions being replaced after challenges.
        log.info("new upstream session #%d (cloudscraper)", self.created)
        return cast(requests.Session, session)

    def acquire(self) -> requests.Session:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            return self._new()

    def release(self, session: requests.Session, *, broken: bool) -> None:
        if broken:
            session.close()
            return
        with self._lock:
            self._idle.append(session)

    def close(self) -> None:
        with self._lock:
            for session in self._idle:
                session.close()
            self._idle.clear()


def proxy_of(session: requests.Session, url: str) -> str | None:
    return session.proxies.get(urlsplit(url).scheme) or None


def request_headers(session: requests.Session, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The session's headers and cookies, for a call sent with aiohttp."""
    headers = {k: v for k, v in session.headers.items() if isinstance(v, str)}
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies if c.value is not None)
    if cookie:
        headers["Cookie"] = cookie
    if extra:
        headers.update(extra)
    return headers


def keep_cookies(session: requests.Session, resp: aiohttp.ClientResponse) -> None:
    """Cookies the answer sets go to the session, as if requests had read it."""
    for name, morsel in resp.cookies.items():
        session.cookies.set(name, morsel.value, path=morsel["path"] or "/")


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
            # aiohttp quietly sends a GET again when a kept-alive connection closes before any
            # answer. The runner's own retries (UPSTREAM_RETRIES, backoff, a fresh session, the
            # failure logged and counted) are the one retry policy: off here. (No public switch;
            # tests/test_reliability_upstream.py notices if it stops working.)
            client._retry_connection = False
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


class DecopyUpstream:
    """The decopy client used by the worker's job function (see :class:`worker.upstream.base.Upstream`)."""

    name = "decopy"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = settings.decopy_base_url.rstrip("/")
        self.pool = SessionPool(settings)
        self._transport: Transport | None = None
        # cloudscraper's challenge calls (rare): synchronous, so in threads of their own.
        self._solver: ThreadPoolExecutor | None = None
        self._timeout = (settings.upstream_connect_timeout, settings.upstream_read_timeout)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = Transport(self._settings, self.pool.ssl_context)
        return self._transport

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        if self._solver is not None:
            self._solver.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    async def stream(self, job: ChatJob) -> AsyncIterator[list[str]]:
        session = self.pool.acquire()
        broken = False
        try:
            job_id = await self.create_job(session, job)
            async for batch in self.read_job(session, job_id):
                yield batch
        except UpstreamFailure as failure:
            broken = failure.replace_session
            raise
        finally:
            # Cancelled or abandoned calls keep their session: its cookies (Cloudflare's clearance)
            # are still good; aiohttp closes a connection whose answer was not read to the end.
            self.pool.release(session, broken=broken)

    async def create_job(self, session: requests.Session, job: ChatJob) -> str:
        form = self.form(job)  # encoded once: a challenge hand-off sends the same body again
        answer = await self.post_create_job(session, form)
        if self.solvable_challenge(session, answer):
            answer = await self.solve_create_job(session, form)
        return self.parse_create_job(answer)

    def form(self, job: ChatJob) -> Form:
        """The multipart body requests would send for these fields (urllib3 encodes it for both)."""
        fields: list[Any] = [
            ("entertext", job["prompt"]),
            ("chat_id", str(uuid.uuid4())),
            ("model", job["upstream_model"]),
            ("chat_group", ""),
        ]
        image = job["image"]
        if image is not None:
            fields.append(("upload_images", (f"image.{image['extension']}", image["data"], image["content_type"])))
        body, content_type = urllib3.encode_multipart_formdata(fields)
        return body, content_type

    async def post_create_job(self, session: requests.Session, form: Form) -> Answer:
        """Send ``create-job``; any HTTP answer is returned, a transport failure raised.

        Split from :meth:`parse_create_job` so the doctor can look at the raw answer
        (was it a Cloudflare page?) before judging it.
        """
        url = self._base + CREATE_PATH
        body, content_type = form
        client, proxy = self.transport.client(proxy_of(session, url))
        headers = request_headers(session, {"Content-Type": content_type})
        try:
            async with client.post(url, data=body, headers=headers, proxy=proxy, allow_redirects=True) as resp:
                keep_cookies(session, resp)
                return await read_answer(resp)
        except TRANSPORT_ERRORS as exc:
            raise exception_failure(exc, "create-job") from exc

    def solvable_challenge(self, session: requests.Session, answer: Answer) -> bool:
        """Is ``answer`` a Cloudflare challenge that cloudscraper can solve (its v1 challenges)?"""
        if answer.status not in (403, 429, 503) or not is_cloudflare(answer):
            return False
        try:
            return bool(Cloudflare(session).is_Challenge_Request(answer.as_requests_response(self._base)))
        except cloudscraper.exceptions.CloudflareException:
            return False  # one it recognises and cannot solve (captcha, v2, blocked)

    async def solve_create_job(self, session: requests.Session, form: Form) -> Answer:
        """``create-job`` again through cloudscraper itself, which solves the challenge on the way
        and keeps the clearance cookie in ``session`` for the calls after it."""
        if self._solver is None:
            self._solver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cloudflare")
        call = Call()
        url = self._base + CREATE_PATH
        body, content_type = form

        def post() -> Answer:
            with interruptible.bind(call):
                resp = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=self._timeout)
                return Answer.of(resp.status_code, resp.headers, resp.content[:ANSWER_LIMIT])

        log.info("create-job met a Cloudflare challenge cloudscraper can solve; solving it")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._solver, post)
        except TRANSPORT_ERRORS as exc:
            raise exception_failure(exc, "create-job") from exc
        finally:
            call.cancel()  # a cancelled job lets go of the upstream at once

    def parse_create_job(self, answer: Answer) -> str:
        """The job id in a ``create-job`` answer; raises :class:`UpstreamFailure` for anything else."""
        what = "create-job"
        if answer.status != 200:
            raise classify_status(answer, what)
        try:
            data = answer.json()
        except ValueError:
            failure = classify_status(answer, what)
            if failure.kind == "cloudflare":
                raise failure from None
            raise UpstreamFailure(
                "protocol",
                f"{what}: answer is not JSON: {_trim(answer.text, 120)}",
                retryable=True,
                status=200,
                body=_trim(answer.text),
            ) from None
        if not isinstance(data, dict):
            raise UpstreamFailure("protocol", f"{what}: answer is not a JSON object", retryable=True, status=200)
        code = data.get("code")
        if code != OK_CODE:
            message = data.get("message")
            reason = message.get("en") or message.get("zh") if isinstance(message, dict) else message
            raise UpstreamFailure(
                "protocol",
                f"{what}: code {code}: {reason or 'no reason given'}",
                retryable=True,
                status=200,
                body=_trim(answer.text),
            )
        result = data.get("result")
        job_id = result.get("job_id") if isinstance(result, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise UpstreamFailure(
                "protocol", f"{what}: answer has no result.job_id", retryable=True, status=200, body=_trim(answer.text)
            )
        return job_id

    async def read_job(
        self, session: requests.Session, job_id: str, parser: StreamParser | None = None
    ) -> AsyncIterator[list[str]]:
        """Stream the job's answer; ``parser`` may be given to read its counts afterwards (the doctor)."""
        what = "get-job"
        url = self._base + STREAM_PATH + job_id
        client, proxy = self.transport.client(proxy_of(session, url))
        headers = request_headers(session, {"Accept": "text/event-stream", "Accept-Encoding": "identity"})
        try:
            resp = await client.get(url, headers=headers, proxy=proxy)
        except TRANSPORT_ERRORS as exc:
            raise exception_failure(exc, what) from exc
        try:
            keep_cookies(session, resp)
            if resp.status != 200:
                raise classify_status(await read_answer(resp), what)
            ctype = resp.headers.get("content-type", "")
            if "json" in ctype or "html" in ctype:
                failure = classify_status(await read_answer(resp), what)
                if failure.kind != "cloudflare":
                    failure = UpstreamFailure(
                        "protocol",
                        f"{what}: expected an event stream, got {ctype}: {failure.body or ''}",
                        retryable=True,
                        status=200,
                        body=failure.body,
                    )
                raise failure
            parser = parser or StreamParser()
            content = resp.content
            while not parser.ended:
                try:
                    data = await content.readany()
                except TRANSPORT_ERRORS as exc:
                    raise exception_failure(exc, what, begun=True) from exc
                if not data:
                    break
                try:
                    deltas = parser.feed(data)
                except UnreadablePiece as exc:
                    raise UpstreamFailure("protocol", f"{what}: {exc}", retryable=True, status=200) from None
                if deltas:
                    yield deltas
            if not parser.ended:
                raise UpstreamFailure(
                    "protocol",
                    f"{what}: the stream ended without its end marker (truncated)",
                    retryable=True,
                    status=200,
                )
        finally:
            # An answer read to its end marker leaves the connection for the next call; any other
            # way out (a failure, a cancelled job, a client that left) closes it, so decopy sees
            # the stream closed at once.
            if parser is not None and parser.ended:
                resp.release()
            else:
                resp.close()
