"""``python -m worker doctor --upstreams``: one section per route target: breaker, last failure, an answer.

The main doctor walks decopy step by step; with more upstreams an operator also needs, per
target (``upstream/model``) of the live routing configuration: is its circuit breaker open, what
was its last failure, and does it answer now? Each target is sent the doctor's tiny prompt
through the worker's own client (the same code path, settings and API key variable as real
traffic). The configuration and the breakers are read from Redis; without Redis, the
environment's seed is used and the breakers are reported as unknown.

Exit status: 0 when every target answered, 1 when one did not, 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from redis.exceptions import RedisError

from shared.breaker import BreakerState, read_states
from shared.messages import ChatJob
from shared.redis_connect import async_redis
from shared.routing import RoutingConfig
from shared.settings import Settings
from worker.doctor.render import cli_settings
from worker.upstream.base import UpstreamFailure
from worker.upstream.router import Router

PROMPT = "Reply with one word: OK"


async def check_targets(settings: Settings) -> tuple[RoutingConfig, list[dict[str, Any]]]:
    redis = async_redis(settings, socket_connect_timeout=2, socket_timeout=5)
    router = Router(settings, redis, default=_decopy(settings))
    states: dict[str, BreakerState] | None = None
    try:
        try:
            await router.live.refresh()
            states = await read_states(redis, router.live.current.labels())
        except (RedisError, OSError):
            pass  # the environment's seed, breakers unknown
        config = router.live.current
        out: list[dict[str, Any]] = []
        for route in config.routes.values():
            for target in route.targets:
                if any(o["target"] == target.label for o in out):
                    continue
                job: ChatJob = {
                    "request_id": "doctor",
                    "model": route.id,
                    "upstream_model": target.model,
                    "prompt": PROMPT,
                    "image": None,
                }
                choice = next(c for c in await router.choices(job) if c.label == target.label)
                started = time.monotonic()
                row: dict[str, Any] = {"target": target.label, "route": route.id}
                try:
                    pieces = 0
                    async for batch in choice.upstream.pieces(choice.job):
                        pieces += len(batch) if isinstance(batch, list) else 1
                    row.update(ok=True, verdict=f"answered ({pieces} piece(s))")
                except UpstreamFailure as failure:
                    row.update(ok=False, verdict=failure.message, kind=failure.kind, body=failure.body)
                row["ms"] = round((time.monotonic() - started) * 1000, 1)
                state = states.get(target.label) if states is not None else None
                row["breaker"] = state.public(settings.breaker_cooldown) if state is not None else None
                out.append(row)
        return config, out
    finally:
        await router.aclose()
        await redis.aclose()


def _decopy(settings: Settings) -> Any:
    from worker.upstream.router import decopy_upstream

    return decopy_upstream(settings)


def format_row(row: dict[str, Any]) -> str:
    mark = "[ ok ]" if row["ok"] else "[FAIL]"
    lines = [f"{mark} {row['target']:<40} {row['ms']:>8.0f} ms  {row['verdict']}"]
    breaker = row.get("breaker")
    if breaker is None:
        lines.append(f"{'':>7}breaker: unknown (Redis not reached)")
    else:
        last = breaker.get("last_failure")
        when = f" ({time.time() - breaker['last_failure_at']:.0f} s ago)" if breaker.get("last_failure_at") else ""
        lines.append(
            f"{'':>7}breaker: {breaker['state']}, {breaker['failures']} failure(s); last failure: {last or '-'}{when}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker doctor --upstreams",
        description="Check every route target: breaker, last failure, answer.",
    )
    parser.add_argument("--json", action="store_true", help="print the sections as JSON")
    args, _ = parser.parse_known_args(argv)
    settings = cli_settings()
    if settings is None:
        return 2
    config, rows = asyncio.run(check_targets(settings))
    if args.json:
        print(json.dumps({"version": config.version, "targets": rows}, indent=2, ensure_ascii=False))
    else:
        print(f"upstream targets: {len(rows)} (routing configuration version {config.version})")
        for row in rows:
            print(format_row(row))
    return 0 if all(r["ok"] for r in rows) else 1
