"""A team key's limits, enforced atomically in Redis so every API replica shares them exactly.

One Lua script admits a request (one round trip, atomic, on Redis' own clock):

- **requests per minute**: a *sliding-window log* (a sorted set of this key's requests in the
  last 60 s). Chosen over a fixed window because a fixed window lets 2 × rpm through around a
  window edge, and over a token bucket because it gives exact, explainable figures for the
  ``x-ratelimit-*`` headers; it costs one set member per request of the last minute.
- **concurrent requests** (chat completions in flight, streamed or not): leases in a sorted set
  scored by expiry (``shared.leases``), renewed while the request runs; expired leases are pruned
  in the same script, so a replica killed with ``kill -9`` leaks its slots for at most
  ``LIMIT_LEASE_TTL`` seconds.
- **daily tokens**: refused once today's estimated tokens reached the budget; a chat whose
  prompt alone would pass it is refused too (:func:`enforce_prompt_budget`). Tokens are charged
  when the request ends, so requests already running may overshoot the budget by their answers.

A refused request counts as a rejection and takes nothing from the other limits. The usage
counters (``api.tenancy.usage``) are written by the same scripts. The master key is never limited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.responses import error_response
from api.tenancy.keys import KeyRecord, Principal
from api.tenancy.usage import DAY_TTL_S, RequestUsage, seconds_to_utc_midnight, utc_day
from shared import metrics, names, redis_trouble
from shared.errors import GatewayError, RateLimited
from shared.leases import NOW_MS, LeaseKeeper

log = logging.getLogger("api.limits")

WINDOW_MS = 60_000

# KEYS: request log, leases, usage today, usage total.
# ARGV: rpm, max concurrent, lease ttl ms, member (a fresh uuid), daily tokens, window ms, day ttl s.
# A limit of 0 is no limit. Returns {refused ('' | requests | concurrency | tokens), now ms,
# requests in window, oldest score, newest score, leases held, tokens used today}.
_ADMIT = (
    NOW_MS
    + """
local rpm, maxc, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local daily, window = tonumber(ARGV[5]), tonumber(ARGV[6])
local count, inflight, used = 0, 0, 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  count = redis.call('ZCARD', KEYS[1])
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[2])
end
if daily > 0 then
  local u = redis.call('HMGET', KEYS[3], 'prompt_tokens', 'completion_tokens')
  used = (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0)
end
local refused = ''
if rpm > 0 and count >= rpm then refused = 'requests'
elseif maxc > 0 and inflight >= maxc then refused = 'concurrency'
elseif daily > 0 and used >= daily then refused = 'tokens' end
if refused == '' then
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], window)
    count = count + 1
  end
  if maxc > 0 then
    redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
else
  redis.call('HINCRBY', KEYS[3], 'rejections', 1)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
  redis.call('HINCRBY', KEYS[4], 'rejections', 1)
end
local oldest, newest = 0, 0
if rpm > 0 and count > 0 then
  oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
end
return {refused, now, count, oldest, newest, inflight, used}
"""
)

# KEYS: request log, leases, usage today, usage total.
# ARGV: member, refund (1: take the request back out of the rpm log), day ttl s, then the
# increments of requests, prompt_tokens, completion_tokens, errors, rejections.
_FINISH = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local fields = {'requests', 'prompt_tokens', 'completion_tokens', 'errors', 'rejections'}
for i, f in ipairs(fields) do
  local n = tonumber(ARGV[3 + i])
  if n ~= 0 then
    redis.call('HINCRBY', KEYS[3], f, n)
    redis.call('HINCRBY', KEYS[4], f, n)
  end
end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return 1
"""


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``6s``, ``1m30s``, ``2h5m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    ms = round(seconds * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass
class Admission:
    """The outcome of the admission script for one request."""

    key: KeyRecord
    member: str
    holds_slot: bool
    refused: str  # "" when admitted
    now_ms: int
    in_window: int
    oldest_ms: int
    newest_ms: int
    tokens_used: int

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the limits this key has."""
        out: dict[str, str] = {}
        if self.key.rpm:
            reset = (self.newest_ms + WINDOW_MS - self.now_ms) / 1000 if self.in_window else 0.0
            out["x-ratelimit-limit-requests"] = str(self.key.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, self.key.rpm - self.in_window))
            out["x-ratelimit-reset-requests"] = duration(reset)
        if self.key.daily_tokens:
            out["x-ratelimit-limit-tokens"] = str(self.key.daily_tokens)
            out["x-ratelimit-remaining-tokens"] = str(max(0, self.key.daily_tokens - self.tokens_used))
            out["x-ratelimit-reset-tokens"] = duration(seconds_to_utc_midnight(self.now_ms / 1000))
        return out

    def error(self) -> RateLimited:
        """The 429 for a refused request, with ``Retry-After``."""
        key = self.key
        if self.refused == "requests":
            wait = max(0.001, (self.oldest_ms + WINDOW_MS - self.now_ms) / 1000)
            return RateLimited(
                f"Rate limit reached for requests per minute (rpm) of key '{key.name}': limit {key.rpm}, "
                f"used {self.in_window}. Please try again in {duration(wait)}.",
                retry_after=max(1, math.ceil(wait)),
            )
        if self.refused == "concurrency":
            return RateLimited(
                f"Rate limit reached for concurrent requests of key '{key.name}': limit {key.max_concurrent} "
                "in flight. Please try again when one of them has finished.",
                retry_after=1,
            )
        wait = seconds_to_utc_midnight(self.now_ms / 1000)
        return RateLimited(
            f"Rate limit reached for tokens per day of key '{key.name}': limit {key.daily_tokens}, "
            f"used {self.tokens_used}. The budget starts afresh at 00:00 UTC, in {duration(wait)}.",
            retry_after=max(1, math.ceil(wait)),
        )


class Limiter:
    """Runs the admission and finish scripts; one per API process, kept in ``app.state``."""

    def __init__(self, redis: Redis, *, lease_ttl_s: float) -> None:
        self._redis = redis
        self.lease_ttl_s = lease_ttl_s
        self._admit = redis.register_script(_ADMIT)
        self._finish = redis.register_script(_FINISH)

    @staticmethod
    def _keys(key_id: str, day: str) -> list[str]:
        return [
            names.key_requests(key_id),
            names.key_leases(key_id),
            names.key_usage_day(key_id, day),
            names.key_usage_total(key_id),
        ]

    async def admit(self, key: KeyRecord, *, holds_slot: bool, day: str) -> Admission:
        """Check and take this key's limits for one request (raises ServiceUnavailable if Redis is down)."""
        member = uuid.uuid4().hex  # never the client's request id: a repeated id must not dodge the rpm
        maxc = (key.max_concurrent or 0) if holds_slot else 0
        args: list[str | int] = [
            key.rpm or 0,
            maxc,
            int(self.lease_ttl_s * 1000),
            member,
            key.daily_tokens or 0,
            WINDOW_MS,
            DAY_TTL_S,
        ]
        try:
            out = await self._admit(keys=self._keys(key.id, day), args=args)
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc
        refused, now_ms, count, oldest, newest, _inflight, used = out
        return Admission(
            key=key,
            member=member,
            holds_slot=bool(maxc),
            refused=refused.decode(),
            now_ms=int(now_ms),
            in_window=int(count),
            oldest_ms=int(oldest),
            newest_ms=int(newest),
            tokens_used=int(used),
        )

    async def finish(self, admission: Admission, usage: RequestUsage, *, status: int | None, day: str) -> None:
        """Release the request's slot and add its usage (best effort: a lost slot expires by itself)."""
        rejected = usage.rejected
        failed = not rejected and (usage.failed or status is None or (status >= 400 and status != 499))
        args: list[str | int] = [
            admission.member,
            int(rejected),
            DAY_TTL_S,
            0 if rejected else 1,
            0 if rejected else usage.prompt_tokens,
            0 if rejected else usage.completion_tokens,
            int(failed),
            int(rejected),
        ]
        try:
            await self._finish(keys=self._keys(admission.key.id, day), args=args)
        except (RedisError, OSError) as exc:
            log.warning("could not record the usage of key %s (slot expires by itself): %s", admission.key.id, exc)


def count_rejection(key_id: str) -> None:
    """Called once for every 429 a key's limits cause (the usage counters have them already)."""
    metrics.rate_limit_rejected(key_id)


#: The routes whose requests occupy the upstream, whatever the dialect.
_UPSTREAM_ROUTES = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/completions"})


def _holds_slot(scope: Scope) -> bool:
    """Requests that count against ``max_concurrent``: chats in every dialect (they occupy the upstream)."""
    return scope.get("method") == "POST" and scope.get("path") in _UPSTREAM_ROUTES


class LimitsMiddleware:
    """Applies a team key's limits to ``/v1/*`` and stamps the ``x-ratelimit-*`` headers on every answer.

    Runs after :class:`api.http.middleware.AuthMiddleware` (which puts the principal into
    ``scope["state"]``). The master key and open mode pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        principal: Principal | None = state.get("principal")
        if principal is None or principal.key is None:
            await self.app(scope, receive, send)
            return
        limiter: Limiter = scope["app"].state.limiter
        day = utc_day()
        try:
            admission = await limiter.admit(principal.key, holds_slot=_holds_slot(scope), day=day)
        except GatewayError as err:
            await error_response(err, scope)(scope, receive, send)
            return
        headers = admission.headers()
        if admission.refused:
            count_rejection(principal.key.id)
            response = error_response(admission.error(), scope)
            response.headers.update(headers)
            await response(scope, receive, send)
            return

        usage = RequestUsage(tokens_used=admission.tokens_used, daily_tokens=principal.key.daily_tokens)
        state["usage"] = usage
        status: int | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    response_headers[name] = value
            await send(message)

        keeper = None
        if admission.holds_slot:
            keeper = LeaseKeeper(
                scope["app"].state.redis, names.key_leases(principal.key.id), admission.member, limiter.lease_ttl_s
            )
            keeper.start()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if keeper is not None:
                await keeper.stop()
            await asyncio.shield(limiter.finish(admission, usage, status=status, day=day))


def enforce_prompt_budget(request: Request, prompt_tokens: int) -> None:
    """429 if this prompt alone would take the key past today's token budget."""
    usage = getattr(request.state, "usage", None)
    if not isinstance(usage, RequestUsage) or not usage.daily_tokens:
        return
    if usage.tokens_used + prompt_tokens > usage.daily_tokens:
        usage.rejected = True
        principal = getattr(request.state, "principal", None)
        key = getattr(principal, "key", None)
        count_rejection(key.id if key is not None else "unknown")
        wait = seconds_to_utc_midnight(time.time())
        raise RateLimited(
            f"Rate limit reached for tokens per day: this prompt is about {prompt_tokens} tokens and only "
            f"{max(0, usage.daily_tokens - usage.tokens_used)} of today's {usage.daily_tokens} are left. "
            f"The budget starts afresh at 00:00 UTC, in {duration(wait)}.",
            retry_after=max(1, math.ceil(wait)),
        )
