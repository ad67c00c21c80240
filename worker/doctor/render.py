"""The doctor's entry points and output: the CLI's lines, the report kept in Redis, the worker job."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from shared import local_run, names
from shared.errors import ConfigError
from shared.settings import Settings, mask_url
from worker.doctor.report import REPORT_TTL, Report, Step
from worker.doctor.run import Doctor

log = logging.getLogger("worker.doctor")


def format_step(step: Step) -> str:
    """One line: status, step, timing, verdict (and what the upstream answered, when it failed)."""
    mark = {"ok": "[ ok ]", "fail": "[FAIL]", "skip": "[skip]"}[step.status]
    took = f"{step.ms:>8.0f} ms" if step.ms is not None else " " * 11
    line = f"{mark} {step.step:<32} {took}  {step.verdict}"
    if step.status == "fail" and step.body:
        line += f"\n{'':>46}upstream answered{f' HTTP {step.http_status}' if step.http_status else ''}: {step.body}"
    return line


def run_doctor(
    settings: Settings, *, source: str = "cli", host: str | None = None, on_step: Callable[[Step], None] | None = None
) -> Report:
    """Run every step once, on an event loop of its own, and return the report (never raises for
    an upstream failure). For callers without a loop: the CLI and the tests; the worker job awaits
    :meth:`Doctor.run` on its own loop."""
    return asyncio.run(Doctor(settings, source=source, host=host, on_step=on_step).run())


def record(settings: Settings, report: dict[str, Any]) -> None:
    """Keep ``report`` as the last doctor run in Redis (synchronous; the CLI's way)."""
    from shared.redis_connect import sync_redis  # REDIS_URL, or the primary REDIS_SENTINELS name

    client = sync_redis(settings, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.set(names.DOCTOR_LAST, json.dumps(report), ex=REPORT_TTL)
    finally:
        client.close()


async def doctor_job(ctx: dict[str, Any]) -> bool:
    """arq job (``shared.names.DOCTOR_FUNCTION``): the dashboard's "run again", run by a worker."""
    runner = ctx["runner"]
    settings: Settings = runner.settings
    redis = runner.redis
    try:
        report = await Doctor(settings, source="dashboard", host=runner.worker_id).run()
        data = report.to_json()
        await redis.set(names.DOCTOR_LAST, json.dumps(data), ex=REPORT_TTL)
        log.info("doctor: %s", data["summary"])
        return bool(data["ok"])
    finally:
        await redis.delete(names.DOCTOR_PENDING)


def cli_settings() -> Settings | None:
    """The settings every doctor command runs with: those of the gateway running from this
    checkout unless the environment names a Redis (see :mod:`shared.local_run`). Prints which Redis
    and upstream they are, or the configuration error (None: exit 2)."""
    env, origin = local_run.environment()
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return None
    print(local_run.describe(settings.redis_url, settings.decopy_base_url, origin), file=sys.stderr, flush=True)
    return settings


def main(argv: list[str]) -> int:
    """``python -m worker doctor [--json]``: 0 when an answer streamed end to end, 1 if not, 2 bad config.

    ``--transports`` tries each of decopy's transports instead (:mod:`worker.doctor.transports`),
    ``--upstreams`` every route target (:mod:`worker.doctor.upstreams`)."""
    if "--transports" in argv:
        from worker.doctor.transports import main as transports_main

        return transports_main([a for a in argv if a != "--transports"])
    if "--upstreams" in argv:
        from worker.doctor.upstreams import main as upstreams_main

        return upstreams_main([a for a in argv if a != "--upstreams"])
    parser = argparse.ArgumentParser(
        prog="python -m worker doctor", description="Check the configured upstream step by step."
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (one object)")
    parser.add_argument("--no-record", action="store_true", help="do not keep the report in Redis")
    args = parser.parse_args(argv)
    on_step = None if args.json else (lambda step: print(format_step(step), flush=True))
    settings = cli_settings()
    if settings is None:
        return 2
    try:
        doctor = Doctor(settings, source="cli", on_step=on_step)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # Upstream warnings (skipped lines) are counted in the report; keep stdout to the report.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if not args.json:
        print(
            f"decopy doctor: {settings.decopy_base_url} "
            f"({', '.join(doctor.report.proxies) or 'no proxy'}), {len(settings.decopy_models)} model(s)"
        )
    report = asyncio.run(doctor.run()).to_json()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(report["summary"])
    if not args.no_record:
        try:
            record(settings, report)
        except Exception as exc:  # Redis is optional for the CLI: the report is printed anyway
            print(
                f"(not kept for the dashboard: Redis at {mask_url(settings.redis_url)} unreachable: {exc})",
                file=sys.stderr,
            )
    return 0 if report["ok"] else 1
