"""The worker's decopy client, driven in-process against the simulator.

Calls go out with aiohttp under a cloudscraper session's identity; cloudscraper itself only
steps in for a Cloudflare challenge it can solve. These tests pin that hand-off both ways and
that the identity (headers, cookies) is the session's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.procs import Stack
from shared.messages import ChatJob
from shared.settings import Settings
from tests.conftest import directive
from worker.upstream.base import UpstreamFailure
from worker.upstream.decopy.client import DecopyUpstream

MODEL = "decopy-deepseek-v3"


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    stack = Stack()
    try:
        _, url = stack.simulator()
        yield url
    finally:
        stack.stop()


def job(text: str) -> ChatJob:
    return {"request_id": "r", "model": MODEL, "upstream_model": "DeepSeek-V3", "prompt": text, "image": None}


def sim_log(sim: str, tag: str) -> list[dict[str, Any]]:
    log = httpx.get(sim + "/_sim/log", timeout=5).json()
    ours = {e["job_id"] for e in log if e["kind"] == "create" and tag in (e["entertext"] or "") and e["job_id"]}
    return [e for e in log if (e["kind"] == "create" and tag in (e["entertext"] or "")) or e["job_id"] in ours]


async def answer(upstream: DecopyUpstream, text: str) -> str:
    return "".join([piece async for batch in upstream.pieces(job(text)) for piece in batch])


def test_a_challenge_cloudscraper_cannot_solve_fails_the_attempt_with_one_call(sim: str, tag: str) -> None:
    async def run() -> None:
        upstream = DecopyUpstream(Settings(decopy_base_url=sim))
        try:
            with pytest.raises(UpstreamFailure) as exc:
                await answer(upstream, f"{tag} " + directive(create_fail="cloudflare", times=1, key=tag))
            assert exc.value.kind == "cloudflare" and exc.value.replace_session
            assert "create-job: Cloudflare challenge (HTTP 403)" in exc.value.message
        finally:
            await upstream.aclose()

    asyncio.run(run())
    assert [e["outcome"] for e in sim_log(sim, tag)] == ["failed:cloudflare"]  # nothing sent again


def test_a_challenge_cloudscraper_can_solve_is_handed_to_it(
    sim: str, tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cloudscraper recognises (and solves) only its v1 challenges, which the simulator does not
    serve; its check is made to say "solvable" for the simulator's challenge page, so the hand-off
    itself runs for real: the call is sent again by cloudscraper's own session, in a thread."""
    from cloudscraper.cloudflare import Cloudflare

    seen: list[int] = []

    def solvable(self: Cloudflare, resp: Any) -> bool:
        seen.append(resp.status_code)
        return bool(resp.headers.get("cf-mitigated") == "challenge")

    monkeypatch.setattr(Cloudflare, "is_Challenge_Request", solvable)

    async def run() -> str:
        upstream = DecopyUpstream(Settings(decopy_base_url=sim))
        try:
            return await answer(
                upstream,
                f"{tag} " + directive(create_fail="cloudflare", times=1, key=tag, reply=["solved ", "then streamed"]),
            )
        finally:
            await upstream.aclose()

    assert asyncio.run(run()) == "solved then streamed"
    # Asked once about aiohttp's answer (the challenge), once by cloudscraper about its own (200).
    assert seen == [403, 200]
    creates = [e for e in sim_log(sim, tag) if e["kind"] == "create"]
    assert [e["outcome"] for e in creates] == ["failed:cloudflare", "ok"]
    # Both calls carry the session's identity; the second one went through requests.
    first, second = (e["headers"] for e in creates)
    for name in ("user-agent", "product-code", "product-serial", "origin", "referer"):
        assert first[name] == second[name], name
    assert "python-requests" not in second["user-agent"]
    assert first["user-agent"].startswith("Mozilla/")


def test_cookies_the_upstream_sets_go_back_with_the_next_calls(sim: str, tag: str) -> None:
    """Cloudflare sets cookies (``__cf_bm``, clearance) that later calls must carry: the session's
    jar receives them from aiohttp's answers and every later call of that session sends them."""

    async def run() -> list[dict[str, str]]:
        upstream = DecopyUpstream(Settings(decopy_base_url=sim))
        try:
            session = upstream.pool.acquire()
            session.cookies.set("cf_clearance", "granted")
            upstream.pool.release(session, broken=False)
            assert await answer(upstream, f"{tag} " + directive(reply=["one"])) == "one"
            return [e["headers"] for e in sim_log(sim, tag)]
        finally:
            await upstream.aclose()

    headers = asyncio.run(run())
    assert len(headers) == 2 and all("cf_clearance=granted" in h.get("cookie", "") for h in headers)
    assert "__cf_bm=" not in headers[0].get("cookie", "")  # create-job's answer set it...
    assert "__cf_bm=" in headers[1]["cookie"]  # ...and get-job sent it back


def test_an_answer_that_arrives_in_parts_is_read_whole(sim: str, tag: str) -> None:
    """create-job's JSON in three parts 30 ms apart (Content-Length known): the job id is read
    from the whole answer, not from the first part that arrived."""

    async def run() -> str:
        upstream = DecopyUpstream(Settings(decopy_base_url=sim))
        try:
            return await answer(upstream, f"{tag} " + directive(split_ms=30, reply=["whole"]))
        finally:
            await upstream.aclose()

    assert asyncio.run(run()) == "whole"
    assert [e["outcome"] for e in sim_log(sim, tag)] == ["ok", "ok"]
