"""The fence around aiohttp's and cloudscraper's private parts (see :mod:`shared.fence`).

The decopy client sends its calls with aiohttp under a cloudscraper session's identity and lets
cloudscraper solve the challenges it can (see :mod:`worker.upstream.decopy.client`). Three things
it needs have no public API: aiohttp's switch for its silent retry, cloudscraper's TLS context
(a browser's cipher suite) and cloudscraper's own "is this a challenge I can solve?" test.
(urllib3's pool classes, public but low-level, are swapped in :mod:`worker.upstream.decopy.interruptible`.)
The OpenAI-compatible upstream (:mod:`worker.upstream.openai_compat`) turns aiohttp's silent
retry off here too: this is aiohttp's one fence, whoever calls it.
"""

from __future__ import annotations

import ssl

import aiohttp
import requests
from cloudscraper.cloudflare import Cloudflare

from shared.fence import PrivateUse

PRIVATE_USES = (
    PrivateUse(
        "aiohttp",
        "aiohttp.client:ClientSession()._retry_connection",
        "aiohttp re-sends a GET when a kept-alive connection closes first; the runner's retries are the one policy",
    ),
    PrivateUse(
        "cloudscraper",
        "cloudscraper.cloudflare:Cloudflare.is_Challenge_Request",
        "whether an answer aiohttp read is a challenge cloudscraper can solve (its own test, not exported)",
        params=("self", "resp"),
    ),
    PrivateUse(
        "cloudscraper",
        "cloudscraper:CipherSuiteAdapter().ssl_context",
        "the browser-like TLS context, built once and shared by every session and by aiohttp",
    ),
)


def no_silent_retry(client: aiohttp.ClientSession) -> None:
    """Turn off aiohttp's quiet re-send of a GET whose kept-alive connection closed before any
    answer: the runner's retries (backoff, a fresh session, logged and counted) are the one policy.
    (``tests/test_reliability_upstream.py`` notices if it stops working.)"""
    client._retry_connection = False


def scraper_ssl_context(session: requests.Session) -> ssl.SSLContext:
    """The TLS context cloudscraper built for ``session`` (a browser's ciphers and curve)."""
    context: ssl.SSLContext = session.adapters["https://"].ssl_context  # type: ignore[attr-defined]
    return context


def is_solvable_challenge(session: requests.Session, resp: requests.Response) -> bool:
    """cloudscraper's own test: is ``resp`` one of the (v1) challenges it solves?"""
    return bool(Cloudflare(session).is_Challenge_Request(resp))
