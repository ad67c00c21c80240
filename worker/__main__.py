"""``python -m worker``: run one worker process.

``python -m worker health``: is this container's worker alive? ``python -m worker doctor``: check the upstream.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from shared.preflight import require_dependencies

# Before the imports below: a Python without them gets a sentence saying which one to use, not a traceback.
require_dependencies("worker")

import uvloop
from arq.worker import func

from shared import metrics, names, queue
from shared.errors import ConfigError
from shared.logs import request_id_var, setup_logging
from shared.messages import ChatJob
from shared.redis_connect import arq_redis_settings
from shared.settings import Settings
from shared.telemetry import Reporter, process_id
from worker import doctor
from worker.health import health_main
from worker.jobs.arq_worker import WakeableWorker
from worker.jobs.runner import ChatRunner, chat
from worker.upstream.router import Router, decopy_upstream


async def observed_chat(ctx: dict[str, Any], job: ChatJob) -> str:
    """The chat job, with its request id on every log line and counted in ``jobs_running``."""
    token = request_id_var.set(job["request_id"])
    metrics.JOBS_RUNNING.inc()
    try:
        return await chat(ctx, job)
    finally:
        metrics.JOBS_RUNNING.dec()
        request_id_var.reset(token)


def build_worker(settings: Settings, worker_id: str) -> WakeableWorker:
    upstream = decopy_upstream(settings)  # DECOPY_TRANSPORT: aiohttp or curl_cffi

    async def on_startup(ctx: dict[str, Any]) -> None:
        router = Router(settings, ctx["redis"], upstream)  # routes, live configuration, breakers
        await router.start()
        ctx["runner"] = ChatRunner(
            settings=settings,
            redis=ctx["redis"],
            upstream=upstream,
            worker_id=worker_id,
            on_outcome=metrics.job_outcome,
            on_emulation=metrics.emulation_counts,
            router=router,
        )
        ctx["reporter"] = Reporter(
            ctx["redis"],
            role="worker",
            registry=metrics.WORKER_REGISTRY,
            interval=settings.metrics_interval,
            process=worker_id,
        )
        await ctx["reporter"].start()

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        runner: ChatRunner | None = ctx.get("runner")
        if runner is not None:
            await runner.aclose()
        reporter: Reporter | None = ctx.get("reporter")
        if reporter is not None:
            await reporter.stop()

    redis_settings = arq_redis_settings(settings)  # REDIS_URL, or the primary REDIS_SENTINELS name
    # Keep trying to reach Redis at start-up rather than crash-looping.
    redis_settings.conn_retries = 1_000_000
    redis_settings.conn_retry_delay = 1
    return WakeableWorker(
        functions=[
            func(observed_chat, name=names.CHAT_FUNCTION, max_tries=queue.CHAT_MAX_TRIES),
            func(doctor.doctor_job, name=names.DOCTOR_FUNCTION, max_tries=queue.DOCTOR_MAX_TRIES),
        ],
        redis_settings=redis_settings,
        queue_name=names.QUEUE,
        max_jobs=settings.worker_concurrency,
        poll_delay=settings.worker_poll_delay,
        allow_abort_jobs=True,
        keep_result=0,
        job_timeout=int(settings.total_timeout) + 60,
        # A job whose worker is gone leaves the queue within seconds (worker/jobs/arq_worker.py).
        in_progress_seconds=settings.orphan_job_seconds,
        job_completion_wait=int(settings.worker_drain_seconds),
        health_check_key=names.worker_health_key(worker_id),
        health_check_interval=5,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        upstream_max_concurrent=settings.upstream_max_concurrent,
        lease_ttl_s=settings.limit_lease_ttl,
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["doctor"]:
        return doctor.main(argv[1:])
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if argv[:1] == ["health"]:
        return health_main(settings, argv[1:])
    setup_logging(settings.log_level)
    asyncio.set_event_loop(uvloop.new_event_loop())
    worker_id = process_id()  # <hostname>-<pid>: also names its arq health key
    build_worker(settings, worker_id).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
