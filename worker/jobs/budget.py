"""The global upstream budget, shared by every worker process through Redis.

``UPSTREAM_RPM`` caps upstream calls (one call: create-job and its get-job stream) per minute
for the whole pool, as a sliding-window log; ``UPSTREAM_MAX_CONCURRENT`` caps the upstream
streams running at once, as leases (``shared.leases``) renewed while the call runs and removed
when it ends, so a worker killed mid-call frees its slot within ``LIMIT_LEASE_TTL``. Both are
checked and taken in one Lua script, on Redis' clock. 0 means unlimited (no Redis call at all).

A job over the budget does not fail at once: it waits in its worker slot, polling the script,
and sends the usual keep-alive every ``WORKER_HEARTBEAT`` so the API's idle timeout does not
fire. The wait is bounded by ``QUEUE_TIMEOUT`` (a job waiting that long for the upstream is a
gateway that is too busy, as much as one waiting that long for a worker): past it, the client
gets a 503 ``upstream_busy`` with ``Retry-After``. The wait also counts towards the API's
``FIRST_TOKEN_TIMEOUT``. A job whose client went away stops waiting at the next heartbeat.
Waiters are not served in arrival order (each polls).

With ``UPSTREAM_MAX_CONCURRENT`` set, a job rarely waits here: the fair queue's claim
(``shared.queue``) takes a job only when an upstream stream is free, and takes that stream's
lease for it (member: the job id), which :meth:`UpstreamBudget.slot` adopts. So jobs wait in the
queue, in fair order across keys, rather than in worker slots; what still waits here is a job
over ``UPSTREAM_RPM``, or a retry whose stream another job took meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import names
from shared.errors import ServiceUnavailable
from shared.leases import NOW_MS, LeaseKeeper
from shared.messages import Message
from shared.settings import Settings

log = logging.getLogger("worker.budget")

WINDOW_MS = 60_000
#: Longest pause between two tries while waiting for a concurrency slot (a slot frees at any time).
POLL_S = 0.2

# KEYS: calls log, leases. ARGV: rpm, max concurrent, lease ttl ms, member, window ms (0 = no limit).
# Returns {1, 0} when taken, else {0, ms until a slot of the per-minute budget frees (0: unknown)}.
_ACQUIRE = (
    NOW_MS
    + """
local rpm, maxc, ttl, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now}
  end
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  -- a lease the fair queue's claim took for this job (member: the job id) is this job's slot
  if not redis.call('ZSCORE', KEYS[2], ARGV[4]) and redis.call('ZCARD', KEYS[2]) >= maxc then return {0, 0} end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
if maxc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, 0}
"""
)


# KEYS: leases, wake channel. ARGV: lease id. A freed upstream stream wakes the workers: with the
# fair queue gated on upstream streams, a waiting job can start now (shared.queue's claim).
_RELEASE = """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n > 0 then redis.call('PUBLISH', KEYS[2], '1') end
return n
"""


class UpstreamBusy(ServiceUnavailable):
    """No upstream budget within ``QUEUE_TIMEOUT``, or the client left while the job waited."""

    code = "upstream_busy"

    def __init__(self, message: str, *, outcome: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.outcome = outcome  # the runner's outcome label: "upstream_busy" or "dropped"


class _Job(Protocol):
    """What the budget needs of the job it holds back (``worker.jobs.runner.Publisher``)."""

    job_id: str
    channel: str

    async def send(self, message: Message) -> None: ...


class UpstreamBudget:
    """The worker's side of the global upstream budget (one per worker process)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._rpm = settings.upstream_rpm
        self._max_concurrent = settings.upstream_max_concurrent
        self._ttl_s = settings.limit_lease_ttl
        self._max_wait = settings.queue_timeout
        self._heartbeat = settings.worker_heartbeat
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        #: Jobs that entered :meth:`slot`: their lease is released there (see :meth:`job_ended`).
        self._entered: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self._rpm or self._max_concurrent)

    async def _try(self, member: str) -> tuple[bool, float]:
        args: list[str | int] = [self._rpm, self._max_concurrent, int(self._ttl_s * 1000), member, WINDOW_MS]
        taken, wait_ms = await self._acquire(keys=[names.UPSTREAM_CALLS, names.UPSTREAM_LEASES], args=args)
        return bool(taken), int(wait_ms) / 1000

    async def _wait(self, job: _Job, member: str) -> None:
        started = time.monotonic()
        deadline = started + self._max_wait
        next_beat = started + self._heartbeat
        waited = False
        while True:
            try:
                taken, wait_s = await self._try(member)
            except (RedisError, OSError) as exc:
                # No budget can be checked without Redis; the job's own publishes fail soon too.
                raise UpstreamBusy(
                    "The gateway cannot reach Redis to check the upstream budget.",
                    outcome="upstream_busy",
                    retry_after=2,
                ) from exc
            if taken:
                if waited:
                    log.info("job %s: upstream budget free after %.2fs", job.job_id, time.monotonic() - started)
                return
            if not waited:
                waited = True
                log.info(
                    "job %s: upstream budget exhausted (rpm %s, concurrent %s); waiting",
                    job.job_id,
                    self._rpm or "-",
                    self._max_concurrent or "-",
                )
            now = time.monotonic()
            if now >= deadline:
                raise UpstreamBusy(
                    f"The upstream budget of the gateway (UPSTREAM_RPM/UPSTREAM_MAX_CONCURRENT) stayed exhausted "
                    f"for {self._max_wait:g} s; try again later.",
                    outcome="upstream_busy",
                    retry_after=max(1, math.ceil(wait_s)) if wait_s else 5,
                )
            if now >= next_beat:
                next_beat = now + self._heartbeat
                await job.send({"kind": "alive"})
                listeners = await self._redis.pubsub_numsub(job.channel)
                if not listeners or listeners[0][1] == 0:
                    raise UpstreamBusy("The client left while the job waited for upstream budget.", outcome="dropped")
            pause = wait_s if wait_s > 0 else POLL_S * random.uniform(0.5, 1.0)  # jitter: waiters do not poll in step
            await asyncio.sleep(max(0.01, min(pause, deadline - now, next_beat - now)))

    @asynccontextmanager
    async def slot(self, job: _Job) -> AsyncIterator[None]:
        """Hold one upstream call's share of the budget; waits for it (see the module docstring)."""
        if not self.enabled:
            yield
            return
        # The job id, not a fresh id: the fair queue's claim may have taken this job's lease already.
        member = job.job_id
        self._entered.add(member)
        await self._wait(job, member)
        keeper = None
        if self._max_concurrent:
            keeper = LeaseKeeper(self._redis, names.UPSTREAM_LEASES, member, self._ttl_s)
            keeper.start()
        try:
            yield
        finally:
            if keeper is not None:
                await keeper.stop()
                await asyncio.shield(self._free(member))

    async def _free(self, member: str) -> None:
        try:
            await self._release(keys=[names.UPSTREAM_LEASES, names.WAKE_CHANNEL], args=[member])
        except (RedisError, OSError) as exc:
            log.warning("could not release upstream lease %s (it expires by itself): %s", member, exc)

    async def job_ended(self, job_id: str) -> None:
        """Called once per job when it ends: frees the upstream lease the claim took for a job that
        never reached :meth:`slot` (refused as a re-run, dropped, withdrawn), so it does not wait
        ``LIMIT_LEASE_TTL`` to expire. No Redis call for a job that went through :meth:`slot`."""
        if job_id in self._entered:
            self._entered.discard(job_id)
        elif self._max_concurrent:
            await asyncio.shield(self._free(job_id))
