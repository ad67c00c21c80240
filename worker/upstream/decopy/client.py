"""decopy.ai's "Ask AI" API (see ``../shared/upstream-decopy.md``), on the worker's event loop.

Two calls per answer: ``create-job`` (multipart form) returns what decopy calls a job id; here it
is the **ticket** (a *job* is always the gateway's own, queued in Redis), so the two are never
mixed up. ``get-job/{ticket}`` sends the answer's pieces as server-sent events ending with
``data: Data transfer completed.``.

This module says what to send and how to read what comes back; the rest is split by concern:
who speaks (:mod:`~worker.upstream.decopy.identity`: cloudscraper sessions), how the calls
travel (:mod:`~worker.upstream.decopy.transport`: aiohttp, failures named), the Cloudflare
challenges cloudscraper can solve (:mod:`~worker.upstream.decopy.challenge`), and the answer's
pieces (:mod:`~worker.upstream.decopy.parser`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import requests
import urllib3

from shared.messages import ChatJob
from shared.settings import Settings
from worker.upstream.base import UpstreamFailure, trim
from worker.upstream.decopy.challenge import ChallengeSolver
from worker.upstream.decopy.identity import (
    SessionPool,
    freeze_environment,
    keep_cookies,
    proxy_of,
    request_headers,
)
from worker.upstream.decopy.parser import PieceParser, UnreadablePiece
from worker.upstream.decopy.transport import (
    TRANSPORT_ERRORS,
    Answer,
    Transport,
    classify_status,
    exception_failure,
    is_cloudflare,
    read_answer,
)

# Names the doctor and the tests take from here (the client's public face).
__all__ = [
    "Answer",
    "DecopyUpstream",
    "SessionPool",
    "classify_status",
    "freeze_environment",
    "is_cloudflare",
]

OK_CODE = 100000
CREATE_PATH = "/api/decopy/ask-ai/create-job"
GET_JOB_PATH = "/api/decopy/ask-ai/get-job/"


async def pieces_of(read: Callable[[], Awaitable[bytes]], parser: PieceParser, what: str) -> AsyncIterator[list[str]]:
    """The pieces of one ``get-job`` answer, whichever transport reads it: ``read`` returns the next
    chunk (``b""`` at the end) and raises :class:`UpstreamFailure` itself for a transport error.
    An unreadable piece, or an answer without its end marker (truncated), fails the answer."""
    while not parser.ended:
        data = await read()
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
            "protocol", f"{what}: the stream ended without its end marker (truncated)", retryable=True, status=200
        )


#: create-job's multipart body and its content type.
Form = tuple[bytes, str]


class DecopyUpstream:
    """The decopy client used by the worker's job function (see :class:`worker.upstream.base.Upstream`)."""

    name = "decopy"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = settings.decopy_base_url.rstrip("/")
        self.pool = SessionPool(settings)
        self._transport: Transport | None = None
        self.solver = ChallengeSolver((settings.upstream_connect_timeout, settings.upstream_read_timeout))

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = Transport(self._settings, self.pool.ssl_context)
        return self._transport

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        self.solver.close()
        self.pool.close()

    async def pieces(self, job: ChatJob) -> AsyncIterator[list[str]]:
        session = self.pool.acquire()
        broken = False
        try:
            ticket = await self.create_ticket(session, job)
            async for batch in self.read_pieces(session, ticket):
                yield batch
        except UpstreamFailure as failure:
            broken = failure.replace_session
            raise
        finally:
            # Cancelled or abandoned calls keep their session: its cookies (Cloudflare's clearance)
            # are still good; aiohttp closes a connection whose answer was not read to the end.
            self.pool.release(session, broken=broken)

    async def create_ticket(self, session: requests.Session, job: ChatJob) -> str:
        form = self.form(job)  # encoded once: a challenge hand-off sends the same body again
        answer = await self.post_create_job(session, form)
        if self.solvable_challenge(session, answer):
            answer = await self.solve_create_job(session, form)
        return self.parse_ticket(answer)

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

        Split from :meth:`parse_ticket` so the doctor can look at the raw answer
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
        return self.solver.solvable(session, answer, self._base)

    async def solve_create_job(self, session: requests.Session, form: Form) -> Answer:
        """``create-job`` again through cloudscraper itself, which solves the challenge on the way
        and keeps the clearance cookie in ``session`` for the calls after it."""
        body, content_type = form
        return await self.solver.post(session, self._base + CREATE_PATH, body, content_type, "create-job")

    def parse_ticket(self, answer: Answer) -> str:
        """The ticket (decopy's ``result.job_id``) in a ``create-job`` answer; raises
        :class:`UpstreamFailure` for anything else."""
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
                f"{what}: answer is not JSON: {trim(answer.text, 120)}",
                retryable=True,
                status=200,
                body=trim(answer.text),
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
                body=trim(answer.text),
            )
        result = data.get("result")
        ticket = result.get("job_id") if isinstance(result, dict) else None
        if not isinstance(ticket, str) or not ticket:
            raise UpstreamFailure(
                "protocol", f"{what}: answer has no result.job_id", retryable=True, status=200, body=trim(answer.text)
            )
        return ticket

    async def read_pieces(
        self, session: requests.Session, ticket: str, parser: PieceParser | None = None
    ) -> AsyncIterator[list[str]]:
        """Read the answer behind ``ticket``, batch by batch of pieces; ``parser`` may be given to read
        its counts afterwards (the doctor)."""
        what = "get-job"
        url = self._base + GET_JOB_PATH + ticket
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
            parser = parser or PieceParser()
            content = resp.content

            async def read() -> bytes:
                try:
                    return await content.readany()
                except TRANSPORT_ERRORS as exc:
                    raise exception_failure(exc, what, begun=True) from exc

            async for deltas in pieces_of(read, parser, what):
                yield deltas
        finally:
            # An answer read to its end marker leaves the connection for the next call; any other
            # way out (a failure, a cancelled job, a client that left) closes it, so decopy sees
            # the stream closed at once.
            if parser is not None and parser.ended:
                resp.release()
            else:
                resp.close()
