"""``python -m worker doctor --transports``: which of decopy's transports gets through, and where each stops.

Cloudflare may let one client through and stop another by its TLS fingerprint alone, so an
operator choosing ``DECOPY_TRANSPORT`` needs to see both tried the same way from the same place.
Each transport (``aiohttp``, ``curl_cffi``) gets a fresh client with the worker's settings (same
proxy, same headers, a new cloudscraper session) and runs one whole answer: ``create-job`` (a
Cloudflare challenge cloudscraper can solve is solved, as in real traffic), then the job's event
stream to its end marker. One line per transport says whether it got through, or the step where
it stopped and what the upstream answered; the last line names the transport to use.

Exit status: 0 when at least one transport got through, 1 when none did, 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from typing import Any

from shared.errors import ConfigError
from shared.messages import ChatJob
from shared.settings import Settings
from worker.doctor.render import cli_settings
from worker.upstream.base import UpstreamFailure
from worker.upstream.decopy.client import DecopyUpstream
from worker.upstream.decopy.parser import PieceParser
from worker.upstream.decopy.transport import is_cloudflare

TRANSPORTS = ("aiohttp", "curl_cffi")
PROMPT = "Reply with one word: OK"


@dataclasses.dataclass
class Verdict:
    transport: str
    ok: bool
    step: str  # the step reached: "client", "create-job", "cloudflare", "stream", or "done"
    detail: str
    ms: float
    kind: str | None = None
    http_status: int | None = None
    body: str | None = None

    def line(self) -> str:
        mark = "[ ok ]" if self.ok else "[FAIL]"
        where = "got through" if self.ok else f"stopped at {self.step}"
        text = f"{mark} {self.transport:<10} {self.ms:>8.0f} ms  {where}: {self.detail}"
        if not self.ok and self.body:
            status = f" HTTP {self.http_status}" if self.http_status else ""
            text += f"\n{'':>30}upstream answered{status}: {self.body[:200]}"
        return text


def _client(settings: Settings, transport: str) -> DecopyUpstream:
    chosen = dataclasses.replace(settings, decopy_transport=transport)
    if transport == "curl_cffi":
        from worker.upstream.decopy.curl_transport import CurlDecopyUpstream

        return CurlDecopyUpstream(chosen)
    return DecopyUpstream(chosen)


async def try_transport(settings: Settings, transport: str) -> Verdict:
    """One whole answer through ``transport``; never raises for an upstream failure."""
    started = time.monotonic()

    def took() -> float:
        return (time.monotonic() - started) * 1000

    try:
        upstream = _client(settings, transport)
    except (ConfigError, ImportError) as exc:
        return Verdict(transport, False, "client", f"not usable here: {exc}", took())
    model_id, upstream_model = next(iter(settings.decopy_models.items()))
    job: ChatJob = {
        "request_id": "doctor",
        "model": model_id,
        "upstream_model": upstream_model,
        "prompt": PROMPT,
        "image": None,
    }
    session = upstream.pool.acquire()
    step = "create-job"
    try:
        form = upstream.form(job)
        answer = await upstream.post_create_job(session, form)
        if upstream.solvable_challenge(session, answer):
            step = "cloudflare"
            answer = await upstream.solve_create_job(session, form)
        elif is_cloudflare(answer):
            step = "cloudflare"
        ticket = upstream.parse_ticket(answer)
        step = "stream"
        parser = PieceParser()
        pieces = 0
        async for batch in upstream.read_pieces(session, ticket, parser):
            pieces += len(batch)
        solved = " (a Cloudflare challenge was solved on the way)" if step == "cloudflare" else ""
        return Verdict(transport, True, "done", f"an answer streamed end to end, {pieces} piece(s){solved}", took())
    except UpstreamFailure as failure:
        if failure.kind == "cloudflare":
            step = "cloudflare"
        return Verdict(transport, False, step, failure.message, took(), failure.kind, failure.status, failure.body)
    finally:
        upstream.pool.release(session, broken=True)
        await upstream.aclose()


async def run(settings: Settings) -> list[Verdict]:
    return [await try_transport(settings, t) for t in TRANSPORTS]


def recommendation(verdicts: list[Verdict], current: str) -> str:
    through = [v.transport for v in verdicts if v.ok]
    if not through:
        return "no transport got through: see where each stopped above"
    if current in through:
        return f"DECOPY_TRANSPORT={current} (in use) gets through" + (
            f"; so does {', '.join(t for t in through if t != current)}" if len(through) > 1 else ""
        )
    return f"use DECOPY_TRANSPORT={through[0]}: DECOPY_TRANSPORT={current} (in use) does not get through"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker doctor --transports",
        description="Try each of decopy's transports (aiohttp, curl_cffi) and say which gets through.",
    )
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    args, _ = parser.parse_known_args(argv)
    settings = cli_settings()
    if settings is None:
        return 2
    verdicts = asyncio.run(run(settings))
    advice = recommendation(verdicts, settings.decopy_transport)
    if args.json:
        out: dict[str, Any] = {
            "base_url": settings.decopy_base_url,
            "in_use": settings.decopy_transport,
            "transports": [dataclasses.asdict(v) for v in verdicts],
            "advice": advice,
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(f"decopy transports: {settings.decopy_base_url} (in use: {settings.decopy_transport})")
        for verdict in verdicts:
            print(verdict.line())
        print(advice)
    return 0 if any(v.ok for v in verdicts) else 1
