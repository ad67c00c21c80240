"""``python -m worker health [--pid PID]``: is this machine's worker process alive? (exit 0 / 1)

Made for a Kubernetes exec liveness probe and the image's HEALTHCHECK, which run inside the
worker's container: same hostname, same process namespace. A worker's liveness signal is arq's
health-check key ``decopy:worker:<hostname>-<pid>``, rewritten every 5 s by the worker's own
poll loop with a 6-s expiry, so it vanishes when the process dies *or* when its loop is stuck.

Which worker: ``--pid``, else PID 1 when PID 1 is ``python -m worker`` (the container's exec-form
entry point), else every ``python -m worker`` process this probe can see; all must be alive.

If the probe itself cannot reach Redis it says so and exits 0: that is Redis's outage, and
restarting workers would not end it (readiness of the API reports it instead).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

from redis.exceptions import RedisError

from shared import names
from shared.redis_connect import async_redis
from shared.settings import Settings


def is_worker_cmdline(argv: list[str]) -> bool:
    """``python -m worker`` with no subcommand (a probe's own ``-m worker health`` is not a worker)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] == "worker":
            return len(argv) == i + 2
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def find_worker_pids() -> list[int]:
    """PID 1 if it is the worker, else every worker process visible in /proc."""
    if is_worker_cmdline(_cmdline(1)):
        return [1]
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and is_worker_cmdline(_cmdline(int(entry.name))):
            pids.append(int(entry.name))
    return sorted(pids)


async def check(settings: Settings, pids: list[int], hostname: str) -> tuple[int, list[str]]:
    """(exit code, one line per worker)."""
    redis = async_redis(settings, socket_connect_timeout=3, socket_timeout=3)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.get(names.worker_health_key(f"{hostname}-{pid}"))
            values = await pipe.execute()
    except (RedisError, OSError) as exc:
        return 0, [f"cannot reach Redis ({exc}); not judging the worker (Redis's outage, not the worker's)"]
    finally:
        await redis.aclose()
    lines = []
    code = 0
    for pid, value in zip(pids, values, strict=True):
        key = names.worker_health_key(f"{hostname}-{pid}")
        if value is None:
            code = 1
            lines.append(f"worker {pid}: DEAD (no fresh {key}: the process is gone or its loop is stuck)")
        else:
            lines.append(f"worker {pid}: alive ({value.decode(errors='replace')})")
    return code, lines


def health_main(settings: Settings, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker health", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pid", type=int, action="append", help="the worker's process id (repeatable)")
    args = parser.parse_args(argv)
    pids = args.pid or find_worker_pids()
    if not pids:
        print("unhealthy: no `python -m worker` process found here", file=sys.stderr)
        return 1
    code, lines = asyncio.run(check(settings, pids, socket.gethostname()))
    print("\n".join(lines), file=sys.stderr if code else sys.stdout)
    return code
