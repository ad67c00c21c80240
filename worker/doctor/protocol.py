"""The doctor's protocol checks: create-job (and Cloudflare on the way), the stream, each model.

They go through the worker's own upstream code (:class:`~worker.upstream.decopy.client.DecopyUpstream`:
the same sessions, proxy and client as real traffic), awaited on the doctor's event loop.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from shared.messages import ChatJob
from shared.settings import mask_url
from worker.doctor.report import PROMPT, Step, ms_since, reason
from worker.doctor.steps import Steps
from worker.upstream.base import UpstreamFailure, trim
from worker.upstream.decopy.client import Answer, DecopyUpstream, classify_status, is_cloudflare
from worker.upstream.decopy.parser import PieceParser


class ProtocolProbes(Steps):
    """create-job, the stream, and every configured model."""

    def _job(self, model_id: str, upstream_model: str) -> ChatJob:
        return ChatJob(request_id="doctor", model=model_id, upstream_model=upstream_model, prompt=PROMPT, image=None)

    async def _create_and_stream(self, upstream: DecopyUpstream) -> str:
        model_id, upstream_model = next(iter(self.settings.decopy_models.items()))
        job = self._job(model_id, upstream_model)
        session = upstream.pool.acquire()
        seen: list[tuple[int, bool, str]] = []  # every answer, including cloudscraper's own retries

        def record(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
            answer = Answer.of(resp.status_code, resp.headers, b"" if kwargs.get("stream") else resp.content)
            seen.append((resp.status_code, is_cloudflare(answer), answer.text))

        broken = True
        try:
            started = time.monotonic()
            try:
                form = upstream.form(job)
                answer = await upstream.post_create_job(session, form)
                seen.append((answer.status, is_cloudflare(answer), answer.text))
                if upstream.solvable_challenge(session, answer):  # the worker hands it to cloudscraper
                    session.hooks["response"].append(record)
                    try:
                        answer = await upstream.solve_create_job(session, form)
                    finally:
                        session.hooks["response"].remove(record)
            except UpstreamFailure as failure:
                if failure.kind == "cloudflare":  # cloudscraper saw a challenge and gave up on it
                    self._fail(
                        Step(
                            "cloudflare",
                            "fail",
                            "challenge not solved by cloudscraper: " + reason(failure, self.settings),
                            ms_since(started),
                            kind="cloudflare",
                        )
                    )
                self._add(Step("cloudflare", "skip", "no HTTP answer to look at"))
                self._fail(
                    Step(
                        "create-job",
                        "fail",
                        f"no answer: {reason(failure, self.settings)}",
                        ms_since(started),
                        kind=failure.kind,
                    )
                )
            took = ms_since(started)
            self._cloudflare_verdict(answer, seen, took)
            try:
                ticket = upstream.parse_ticket(answer)
            except UpstreamFailure as failure:
                self._fail(
                    Step(
                        "create-job",
                        "fail",
                        reason(failure, self.settings),
                        took,
                        http_status=answer.status,
                        body=failure.body or trim(answer.text),
                        kind=failure.kind,
                    )
                )
            proxy = session.proxies.get("https") or session.proxies.get("http")
            via = f"; via proxy {mask_url(proxy)}" if proxy else ""
            self._add(
                Step(
                    "create-job",
                    "ok",
                    f"HTTP 200, code 100000, ticket {ticket[:16]}… (model "
                    f"{upstream_model}; fields and headers accepted{via})",
                    took,
                    http_status=200,
                )
            )
            await self._stream(upstream, session, ticket)
            broken = False
        finally:
            upstream.pool.release(session, broken=broken)
        return model_id

    def _cloudflare_verdict(self, answer: Answer, seen: list[tuple[int, bool, str]], took: float) -> None:
        challenges = [status for status, challenged, _ in seen if challenged]
        final = classify_status(answer, "create-job") if answer.status != 200 or challenges else None
        if final is not None and final.kind == "cloudflare":
            self._fail(
                Step(
                    "cloudflare",
                    "fail",
                    f"challenge served on create-job (HTTP {answer.status}"
                    f"{', cf-mitigated: challenge' if answer.headers.get('cf-mitigated') else ''}); "
                    "cloudscraper did not solve it",
                    took,
                    http_status=answer.status,
                    body=final.body,
                    kind="cloudflare",
                )
            )
        if challenges:
            self._add(
                Step(
                    "cloudflare",
                    "ok",
                    f"challenge seen (HTTP {challenges[0]}) and solved by cloudscraper",
                    took,
                    http_status=answer.status,
                )
            )
        else:
            self._add(
                Step(
                    "cloudflare",
                    "ok",
                    f"no challenge (create-job answered HTTP {answer.status})",
                    took,
                    http_status=answer.status,
                )
            )

    async def _stream(self, upstream: DecopyUpstream, session: requests.Session, ticket: str) -> None:
        started = time.monotonic()
        parser = PieceParser()
        pieces: list[str] = []
        first: list[float] = []

        async def read() -> None:
            async for batch in upstream.read_pieces(session, ticket, parser=parser):
                if not first:
                    first.append(ms_since(started))
                pieces.extend(batch)

        try:
            await read()
        except UpstreamFailure as failure:
            where = f"after {len(pieces)} piece(s) of text" if pieces else "before any text"
            self._fail(
                Step(
                    "stream",
                    "fail",
                    f"{reason(failure, self.settings)} ({where})",
                    ms_since(started),
                    http_status=failure.status,
                    body=failure.body,
                    kind=failure.kind,
                )
            )
        text = "".join(pieces)
        if not text.strip():
            self._fail(
                Step(
                    "stream",
                    "fail",
                    "the stream ended properly but carried no text",
                    ms_since(started),
                    http_status=200,
                    kind="protocol",
                )
            )
        skipped = f", {parser.skipped} unreadable line(s) skipped" if parser.skipped else ""
        self._add(
            Step(
                "stream",
                "ok",
                f"{len(pieces)} event(s) parsed{skipped}, end marker seen; first text after "
                f"{first[0]:.0f} ms: {trim(text, 60)!r}",
                ms_since(started),
                http_status=200,
            )
        )

    async def _models(self, upstream: DecopyUpstream, checked: str) -> None:
        for model_id, upstream_model in self.settings.decopy_models.items():
            name = f"model {model_id}"
            if model_id == checked:
                self._add(Step(name, "ok", f"{upstream_model}: answered in the create-job and stream steps"))
                continue
            started = time.monotonic()
            pieces: list[str] = []

            async def read(job: ChatJob) -> None:
                async for batch in upstream.pieces(job):
                    pieces.extend(batch)

            try:
                await read(self._job(model_id, upstream_model))
            except UpstreamFailure as failure:
                self._add(
                    Step(
                        name,
                        "fail",
                        f"{upstream_model}: {reason(failure, self.settings)}",
                        ms_since(started),
                        http_status=failure.status,
                        body=failure.body,
                        kind=failure.kind,
                    )
                )
                continue
            if not "".join(pieces).strip():
                self._add(
                    Step(
                        name,
                        "fail",
                        f"{upstream_model}: the answer carried no text",
                        ms_since(started),
                        kind="protocol",
                    )
                )
                continue
            self._add(Step(name, "ok", f"{upstream_model}: {len(pieces)} event(s), end marker seen", ms_since(started)))
