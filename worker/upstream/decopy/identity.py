"""Who the decopy client is: cloudscraper sessions (browser headers, cookies, proxy, TLS context).

Each upstream call borrows a session from the worker's :class:`SessionPool`: its browser
headers, its cookies (among them Cloudflare's clearance), its proxy, and cloudscraper's TLS
settings (a browser's cipher suite). The call itself goes out with aiohttp
(:mod:`worker.upstream.decopy.transport`) under that identity; the helpers here carry the
session's headers and cookies over to it and back.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import ssl
import threading
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import certifi
import cloudscraper
import requests

from shared.settings import Settings, proxy_urls
from worker.upstream.decopy import interruptible
from worker.upstream.decopy.fence import scraper_ssl_context

log = logging.getLogger("worker.decopy")


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
            self._ssl_context = scraper_ssl_context(session)
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
