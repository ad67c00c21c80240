"""decopy.ai's "Ask AI" API through cloudscraper (see ``../shared/upstream-decopy.md``).

Two calls per answer: ``create-job`` (multipart form) returns a job id; ``get-job/{id}`` streams
the answer as server-sent events ending with ``data: Data transfer completed.``.

Upstream traffic can go through outbound proxies (``DECOPY_PROXY``: http, https, socks4/5 URLs,
comma-separated; socks through PySocks, ``requests``' own socks support).

cloudscraper sessions are ``requests`` sessions: not safe to share between threads, and they
carry the Cloudflare clearance cookie. The worker process owns a :class:`SessionPool`; each
call borrows one session for its whole duration and gives it back, and a session that hit a
challenge or a broken connection is thrown away so the next call starts fresh.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import ssl
import threading
import uuid
from collections.abc import Generator, Iterator
from typing import Any, cast

import cloudscraper
import requests
import urllib3.exceptions
from requests import Response

from shared.messages import ChatJob
from shared.settings import Settings, proxy_urls
from worker.sse_parser import StreamParser
from worker.upstream import interruptible
from worker.upstream.base import Call, UpstreamFailure

log = logging.getLogger("worker.decopy")

OK_CODE = 100000
CREATE_PATH = "/api/decopy/ask-ai/create-job"
STREAM_PATH = "/api/decopy/ask-ai/get-job/"


def _trim(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def is_cloudflare(resp: Response, body: str) -> bool:
    return (
        resp.headers.get("cf-mitigated", "").lower() == "challenge"
        or "Just a moment" in body
        or "cf-chl" in body
        or "Attention Required! | Cloudflare" in body
    )


def classify_status(resp: Response, what: str) -> UpstreamFailure:
    """The failure a non-200 (or challenge) answer stands for."""
    try:
        body = resp.text[:4000]
    except (requests.RequestException, urllib3.exceptions.HTTPError):
        body = ""
    status = resp.status_code
    if status in (403, 503) and is_cloudflare(resp, body) or (status == 200 and is_cloudflare(resp, body)):
        return UpstreamFailure("cloudflare", f"{what}: Cloudflare challenge (HTTP {status})", retryable=True,
                               status=status, body=_trim(body), replace_session=True)
    if status == 429:
        return UpstreamFailure("rate_limited", f"{what}: rate limited (HTTP 429)", retryable=True,
                               status=status, body=_trim(body))
    retryable = status >= 500 or status in (403, 408, 425)
    return UpstreamFailure("http", f"{what}: HTTP {status}: {_trim(body, 120)}", retryable=retryable,
                           status=status, body=_trim(body), replace_session=status == 403)


def _exception_failure(exc: BaseException, what: str) -> UpstreamFailure:
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return UpstreamFailure("timeout", f"{what}: {type(exc).__name__}", retryable=True, replace_session=True)
    if isinstance(exc, cloudscraper.exceptions.CloudflareException):
        return UpstreamFailure("cloudflare", f"{what}: {exc}", retryable=True, replace_session=True)
    return UpstreamFailure("connection", f"{what}: {type(exc).__name__}: {_trim(str(exc), 160)}",
                           retryable=True, replace_session=True)


def freeze_environment(session: requests.Session, url: str) -> None:
    """Take once what requests reads from the environment on every request, then stop it reading.

    With ``trust_env`` on, each request walks all of ``os.environ`` (proxies, twice), ``NO_PROXY``,
    ``~/.netrc`` and the CA-bundle variables: ~0.2 ms of CPU per request, two requests per answer.
    A worker's environment does not change while it runs, and a session calls one base URL, so
    the answers are the same every time: resolved here for ``url`` as requests would.
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
    """cloudscraper sessions of one worker process, each used by one thread at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[requests.Session] = []
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None  # shared by every session (see _new)
        # Each new session takes the next proxy, so sessions (and a session replaced after a ban)
        # spread over all of them; each process starts at a random one so that a pool of
        # lightly loaded workers does not send everything through the first.
        proxies = proxy_urls(settings.decopy_proxy)  # validated at start-up (Settings.validate)
        if proxies:
            start = random.randrange(len(proxies))
            proxies = proxies[start:] + proxies[:start]
        self._proxies = itertools.cycle(proxies) if proxies else None
        self.created = 0

    def _new(self) -> requests.Session:
        session = cloudscraper.create_scraper(browser={"browser": "chrome", "platform": "windows", "mobile": False},
                                              ssl_context=self._ssl_context)
        freeze_environment(session, self._settings.decopy_base_url)
        if self._ssl_context is None:
            # cloudscraper builds a TLS context per session (browser ciphers and curve, TLS 1.2-1.3,
            # the system's certificates loaded): 40 ms of CPU, 2 ms with one shared. The cipher
            # suite is the same for every session of this browser; cookies stay per session.
            self._ssl_context = session.adapters["https://"].ssl_context
        session.headers.update({
            "Accept": "*/*",
            "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
            "Origin": "https://decopy.ai",
            "Referer": "https://decopy.ai/",
            "product-code": self._settings.decopy_product_code,
            "product-serial": self._settings.decopy_product_serial,
            "User-Agent": self._settings.decopy_user_agent,
        })
        if self._proxies is not None:
            proxy = next(self._proxies)
            session.proxies = {"http": proxy, "https": proxy}
        interruptible.track(session)  # a cancelled job lets go of the upstream at once
        self.created += 1
        # Logged so an operator (and the tests) can see sessions being replaced after challenges.
        log.info("new upstream session #%d (cloudscraper)", self.created)
        return cast(requests.Session, session)

    def acquire(self) -> requests.Session:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            # Creating one takes a few ms; do it outside the lock? It is rare enough to keep simple.
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


class DecopyUpstream:
    """The decopy client used by the worker's job function (see :class:`worker.upstream.base.Upstream`)."""

    name = "decopy"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = settings.decopy_base_url.rstrip("/")
        self._timeout = (settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self.pool = SessionPool(settings)

    def close(self) -> None:
        self.pool.close()

    def stream(self, job: ChatJob, call: Call) -> Generator[list[str], None, None]:
        session = self.pool.acquire()
        broken = False
        try:
            with interruptible.bind(call):
                job_id = self.create_job(session, job)
                if call.cancelled.is_set():
                    return
                yield from self.read_job(session, job_id, call)
        except UpstreamFailure as failure:
            # A failure caused by our own cancel says nothing about the session (and replacing it
            # would throw away its Cloudflare clearance).
            broken = failure.replace_session and not call.cancelled.is_set()
            raise
        except GeneratorExit:
            broken = True  # the stream was abandoned mid-read: do not reuse its connection
            raise
        finally:
            # A connection shut down by a cancel is not reused: urllib3 drops dropped connections.
            self.pool.release(session, broken=broken)

    def create_job(self, session: requests.Session, job: ChatJob) -> str:
        return self.parse_create_job(self.post_create_job(session, job))

    def post_create_job(self, session: requests.Session, job: ChatJob) -> Response:
        """Send ``create-job``; any HTTP answer is returned, a transport failure raised.

        Split from :meth:`parse_create_job` so the doctor can look at the raw answer
        (was it a Cloudflare page?) before judging it.
        """
        fields: dict[str, Any] = {
            "entertext": (None, job["prompt"]),
            "chat_id": (None, str(uuid.uuid4())),
            "model": (None, job["upstream_model"]),
            "chat_group": (None, ""),
        }
        image = job["image"]
        if image is not None:
            fields["upload_images"] = (f"image.{image['extension']}", image["data"], image["content_type"])
        try:
            return session.post(self._base + CREATE_PATH, files=fields, timeout=self._timeout)
        except (requests.RequestException, urllib3.exceptions.HTTPError, cloudscraper.exceptions.CloudflareException,
                OSError) as exc:
            raise _exception_failure(exc, "create-job") from exc

    def parse_create_job(self, resp: Response) -> str:
        """The job id in a ``create-job`` answer; raises :class:`UpstreamFailure` for anything else."""
        what = "create-job"
        if resp.status_code != 200:
            raise classify_status(resp, what)
        try:
            data = resp.json()
        except ValueError:
            failure = classify_status(resp, what)
            if failure.kind == "cloudflare":
                raise failure from None
            raise UpstreamFailure("protocol", f"{what}: answer is not JSON: {_trim(resp.text, 120)}",
                                  retryable=True, status=200, body=_trim(resp.text)) from None
        if not isinstance(data, dict):
            raise UpstreamFailure("protocol", f"{what}: answer is not a JSON object", retryable=True, status=200)
        code = data.get("code")
        if code != OK_CODE:
            message = data.get("message")
            reason = message.get("en") or message.get("zh") if isinstance(message, dict) else message
            raise UpstreamFailure("protocol", f"{what}: code {code}: {reason or 'no reason given'}",
                                  retryable=True, status=200, body=_trim(resp.text))
        result = data.get("result")
        job_id = result.get("job_id") if isinstance(result, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise UpstreamFailure("protocol", f"{what}: answer has no result.job_id", retryable=True, status=200,
                                  body=_trim(resp.text))
        return job_id

    def read_job(self, session: requests.Session, job_id: str, call: Call,
                 parser: StreamParser | None = None) -> Iterator[list[str]]:
        """Stream the job's answer; ``parser`` may be given to read its counts afterwards (the doctor)."""
        what = "get-job"
        try:
            resp = session.get(self._base + STREAM_PATH + job_id, stream=True, timeout=self._timeout,
                               headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"})
        except (requests.RequestException, urllib3.exceptions.HTTPError, cloudscraper.exceptions.CloudflareException,
                OSError) as exc:
            raise _exception_failure(exc, what) from exc
        with resp:
            if resp.status_code != 200:
                raise classify_status(resp, what)
            ctype = resp.headers.get("content-type", "")
            if "json" in ctype or "html" in ctype:
                failure = classify_status(resp, what)
                if failure.kind != "cloudflare":
                    failure = UpstreamFailure("protocol", f"{what}: expected an event stream, got {ctype}: "
                                              f"{failure.body or ''}", retryable=True, status=200, body=failure.body)
                raise failure
            raw = resp.raw
            call.on_cancel(lambda: _interrupt(resp))
            parser = parser or StreamParser()
            while not parser.ended:
                try:
                    data = raw.read1(65536, decode_content=True)
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError, ValueError) as exc:
                    if call.cancelled.is_set():
                        return
                    raise _exception_failure(exc, what) from exc
                if not data:
                    break
                deltas = parser.feed(data)
                if deltas:
                    yield deltas
            if call.cancelled.is_set():
                return
            if not parser.ended:
                raise UpstreamFailure("protocol", f"{what}: the stream ended without its end marker (truncated)",
                                      retryable=True, status=200)


def _interrupt(resp: Response) -> None:
    """Make a read blocked in another thread return now (shutdown wakes it; close alone may not)."""
    shutdown = getattr(resp.raw, "shutdown", None)
    if shutdown is not None:
        shutdown()
    resp.close()
