"""Cloudflare challenges on create-job: recognised in an aiohttp answer, solved by cloudscraper.

cloudscraper (a synchronous ``requests`` session) sends a request only when an answer is a
Cloudflare challenge it can solve: it then repeats the call in a thread, solves the challenge and
keeps the clearance cookie in the session, where the next calls find it. A challenge it cannot
solve (Cloudflare's managed and captcha challenges) fails the attempt and the session is
replaced. A job cancelled meanwhile lets go of the upstream at once
(:mod:`worker.upstream.decopy.interruptible`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import cloudscraper
import requests

from worker.upstream.base import Call
from worker.upstream.decopy import interruptible
from worker.upstream.decopy.fence import is_solvable_challenge
from worker.upstream.decopy.transport import ANSWER_LIMIT, TRANSPORT_ERRORS, Answer, exception_failure, is_cloudflare

log = logging.getLogger("worker.decopy")


class ChallengeSolver:
    """cloudscraper's challenge calls (rare): synchronous, so in threads of their own."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        self._timeout = timeout
        self._threads: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def solvable(self, session: requests.Session, answer: Answer, url: str) -> bool:
        """Is ``answer`` a Cloudflare challenge that cloudscraper can solve (its v1 challenges)?"""
        if answer.status not in (403, 429, 503) or not is_cloudflare(answer):
            return False
        try:
            return is_solvable_challenge(session, answer.as_requests_response(url))
        except cloudscraper.exceptions.CloudflareException:
            return False  # one it recognises and cannot solve (captcha, v2, blocked)

    async def post(self, session: requests.Session, url: str, body: bytes, content_type: str, what: str) -> Answer:
        """POST again through cloudscraper itself, which solves the challenge on the way and keeps
        the clearance cookie in ``session`` for the calls after it."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cloudflare")
        call = Call()

        def post() -> Answer:
            with interruptible.bind(call):
                resp = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=self._timeout)
                return Answer.of(resp.status_code, resp.headers, resp.content[:ANSWER_LIMIT])

        log.info("%s met a Cloudflare challenge cloudscraper can solve; solving it", what)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, post)
        except TRANSPORT_ERRORS as exc:
            raise exception_failure(exc, what) from exc
        finally:
            call.cancel()  # a cancelled job lets go of the upstream at once
