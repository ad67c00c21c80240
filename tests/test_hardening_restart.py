"""A Redis restart leaves no phantom work: real workers, a real Redis restarted with its data.

Before: Redis restarted with its append-only file (as compose and Kubernetes run it) while 20
streams ran; the interrupted jobs stayed in the queue for about 11 minutes (their in-progress
keys lived the whole job timeout) and new requests got ``queue_full`` with nothing running. Now
a job whose worker is gone leaves the queue within ``ORPHAN_JOB_SECONDS`` and never runs again.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import urlparse

import openai
import pytest
import redis

from devtools.procs import wait_for
from shared import names
from tests.conftest import Gateway, start_gateway, wait_until
from tests.reliability_support import MODEL, creates, prompt, streams, user

pytestmark = pytest.mark.slow

STREAMS = 20
ORPHAN_SECONDS = 3


def restart_with_data(gw: Gateway) -> None:
    """Stop the stack's Redis cleanly and start it again on the same port from its append-only file."""
    port = urlparse(gw.redis_url).port
    assert port is not None
    old = [p for p in gw.stack.procs if p.name == "redis" and p.alive()][-1]
    old.stop()
    binary = shutil.which("redis-server")
    assert binary
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
    gw.stack.spawn("redis", [binary, *args, "--dir", str(gw.stack.workdir)])

    def up() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    wait_for(up, 15, "redis again")


def test_jobs_interrupted_by_a_redis_restart_leave_the_queue_within_seconds_and_never_rerun(tag: str) -> None:
    gw = start_gateway(
        {"ORPHAN_JOB_SECONDS": str(ORPHAN_SECONDS), "MAX_QUEUE": str(STREAMS + 5), "REDIS_TIMEOUT": "1"}, workers=2
    )
    r = redis.Redis.from_url(gw.redis_url, socket_timeout=5)
    try:
        r.config_set("appendonly", "yes")  # as compose and Kubernetes run it

        def persistence() -> dict[str, Any]:
            return cast(dict[str, Any], r.info("persistence"))

        wait_until(
            lambda: persistence()["aof_enabled"] == 1 and persistence()["aof_rewrite_in_progress"] == 0,
            15,
            "the append-only file",
        )

        def stream(i: int) -> None:
            try:
                for _ in gw.client().chat.completions.create(
                    model=MODEL, stream=True, messages=user(prompt(f"{tag}-run{i}", n=400, interval_ms=50))
                ):
                    pass
            except openai.APIError:
                pass  # interrupted by the restart: the point of the test

        threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(STREAMS)]
        for t in threads:
            t.start()
        wait_until(lambda: len(streams(gw, f"{tag}-run")) == STREAMS, 30, "all streams running upstream")
        assert r.zcard(names.QUEUE) == STREAMS

        restart_with_data(gw)
        r = redis.Redis.from_url(gw.redis_url, socket_timeout=5)
        for t in threads:
            t.join(30)
        # Cleared within the bound (plus a poll), not after the job timeout.
        wait_until(lambda: r.zcard(names.QUEUE) == 0, ORPHAN_SECONDS * 5, "the interrupted jobs to leave the queue")

        with ThreadPoolExecutor(STREAMS) as pool:
            answers = list(
                pool.map(
                    lambda i: gw.client().chat.completions.create(
                        model=MODEL, messages=user(prompt(f"{tag}-new{i}", reply=["fresh"]))
                    ),
                    range(STREAMS),
                )
            )
        assert [a.choices[0].message.content for a in answers] == ["fresh"] * STREAMS
        for i in range(STREAMS):  # the upstream was never asked twice for an interrupted job
            assert len(creates(gw, f"{tag}-run{i} ")) == 1
    finally:
        r.close()
        gw.stop()
