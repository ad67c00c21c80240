"""Circuit breakers per target (``upstream/model``), kept in Redis so every worker shares them.

A target starts *closed*. Each failed attempt adds one to its consecutive failures; at
``BREAKER_FAILURES`` it *opens*: routes skip it for ``BREAKER_COOLDOWN`` seconds (going to their
next target). After the cool-down the first worker to ask turns it *half-open* and sends one
request there (the probe); the others keep skipping it. The probe's success closes it, its
failure opens it again for another cool-down. A probe that never reports (its worker died) is
replaced after one cool-down.

When every target of a route is open the route still tries them in order rather than refusing
(a route with one target then behaves as without a breaker, as the gateway did before).

Cheap on the hot path: each process keeps a snapshot of every target's state (one pipelined
read per ``CONFIG_POLL_INTERVAL``); a closed target with no failures costs a request no Redis
call at all, neither before nor after. Only failures, and targets not known clean, go to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import names
from shared.tasks import stop_task

log = logging.getLogger("shared.breaker")

#: Gauge value of each state (the metric ``decopy_upstream_breaker_state``).
STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}

# KEYS: breaker. ARGV: now, cooldown. -> {allowed 0/1, state}
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {1, 'closed'} end
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[2])
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
  if now < opened + cooldown then return {0, 'open'} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_at', ARGV[1])
  return {1, 'half_open'}
end
local probe = tonumber(redis.call('HGET', KEYS[1], 'probe_at') or '0')
if now >= probe + cooldown then
  redis.call('HSET', KEYS[1], 'probe_at', ARGV[1])
  return {1, 'half_open'}
end
return {0, 'half_open'}
"""

# KEYS: breaker, index. ARGV: now, threshold, message, target. -> the state after
_FAIL = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'last_failure', ARGV[3], 'last_failure_at', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[4])
local threshold = tonumber(ARGV[2])
if state == 'half_open' or (state == 'closed' and threshold > 0 and failures >= threshold) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1])
  return 'open'
end
if state == 'closed' then redis.call('HSET', KEYS[1], 'state', 'closed') end
return state
"""

# KEYS: breaker, index. ARGV: now, target. -> the state before
_SUCCEED = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'last_success_at', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return state
"""


@dataclass(frozen=True)
class BreakerState:
    target: str
    state: str = "closed"
    failures: int = 0
    opened_at: float | None = None
    last_failure: str | None = None
    last_failure_at: float | None = None

    @property
    def clean(self) -> bool:
        return self.state == "closed" and self.failures == 0

    def public(self, cooldown: float) -> dict[str, Any]:
        reopens = None
        if self.state == "open" and self.opened_at is not None:
            reopens = self.opened_at + cooldown
        return {
            "target": self.target,
            "state": self.state,
            "failures": self.failures,
            "opened_at": self.opened_at,
            "retry_at": reopens,
            "last_failure": self.last_failure,
            "last_failure_at": self.last_failure_at,
        }


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _state(target: str, raw: dict[Any, Any]) -> BreakerState:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return BreakerState(
        target=target,
        state=fields.get("state") or "closed",
        failures=int(fields.get("failures") or 0),
        opened_at=_float(fields.get("opened_at")),
        last_failure=fields.get("last_failure"),
        last_failure_at=_float(fields.get("last_failure_at")),
    )


async def read_states(redis: Redis, targets: Iterable[str]) -> dict[str, BreakerState]:
    """Every given target's breaker (closed when it has no record), in one round trip."""
    targets = list(targets)
    if not targets:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for target in targets:
            pipe.hgetall(names.breaker_key(target))
        raws = await pipe.execute()
    return {t: _state(t, raw or {}) for t, raw in zip(targets, raws, strict=True)}


class Breakers:
    """This process's view of the breakers, and the calls that change them (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        threshold: int,
        cooldown: float,
        interval: float,
        targets: Callable[[], Iterable[str]],
        on_snapshot: Callable[[dict[str, BreakerState]], None] | None = None,
    ) -> None:
        self._redis = redis
        self.threshold = threshold
        self.cooldown = cooldown
        self._interval = interval
        self._targets = targets
        self._on_snapshot = on_snapshot
        self.snapshot: dict[str, BreakerState] = {}
        self._dirty: set[str] = set()  # failed here since the last snapshot: success must be written
        self._allow = redis.register_script(_ALLOW)
        self._fail = redis.register_script(_FAIL)
        self._succeed = redis.register_script(_SUCCEED)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="breaker-poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def refresh(self) -> None:
        self.snapshot = await read_states(self._redis, self._targets())
        if self._on_snapshot is not None:
            self._on_snapshot(self.snapshot)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.debug("breaker poll failed: %s", exc)

    async def allow(self, target: str) -> bool:
        """May a request go to ``target`` now? (An open one past its cool-down lets one through.)"""
        known = self.snapshot.get(target)
        if (known is None or known.state == "closed") and target not in self._dirty:
            return True
        try:
            allowed, state = await self._allow(keys=[names.breaker_key(target)], args=[time.time(), self.cooldown])
        except (RedisError, OSError) as exc:
            log.warning("breaker of %s not readable (%s); trying it", target, exc)
            return True
        if _text(state) == "half_open" and allowed:
            log.info("breaker of %s half-open: one request tries it", target)
        return bool(allowed)

    async def failed(self, target: str, message: str) -> None:
        self._dirty.add(target)
        try:
            state = _text(
                await self._fail(
                    keys=[names.breaker_key(target), names.BREAKERS],
                    args=[time.time(), self.threshold, message[:300], target],
                )
            )
        except (RedisError, OSError) as exc:
            log.warning("breaker of %s not updated (%s)", target, exc)
            return
        if state == "open":
            log.warning("breaker of %s open for %gs after: %s", target, self.cooldown, message)

    async def succeeded(self, target: str) -> None:
        known = self.snapshot.get(target)
        if (known is None or known.clean) and target not in self._dirty:
            return  # nothing to reset: no Redis call on the hot path
        self._dirty.discard(target)
        try:
            before = _text(
                await self._succeed(keys=[names.breaker_key(target), names.BREAKERS], args=[time.time(), target])
            )
        except (RedisError, OSError) as exc:
            log.warning("breaker of %s not updated (%s)", target, exc)
            return
        if before != "closed":
            log.info("breaker of %s closed again", target)
