"""The request log: one entry per chat request through any dialect, kept in a capped Redis stream.

Operators need to answer "who sent what, when, and what happened to it"; metrics and usage
totals cannot. Each entry names the caller by key id and name (never the key), the dialect, the
model, the upstream target, the outcome (status, error code), tokens in and out, time to first
token, duration, queue wait and the client's address. The conversation and the answer are only
in it with ``LOG_PROMPTS`` on (the access log's own copy, clipped).

Off the hot path: the access-log middleware hands the finished request to :func:`collect` when its
response has ended (a dict appended to an in-process buffer, no I/O), and one background task
per API process writes the buffer in batches (one pipeline of ``XADD … MAXLEN ~`` per batch, then
``XTRIM MINID ~`` for the age limit). A Redis outage keeps at most ``_BUFFER`` entries waiting;
beyond that the oldest are dropped (and counted in a warning), never the request delayed.

Reading (:meth:`RequestLog.query`) walks the stream newest first with ``XREVRANGE``; the stream id
is the cursor, and a time range maps onto stream ids directly (they are milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Scope

from shared import metrics, names
from shared.errors import InvalidRequest
from shared.tasks import stop_task

log = logging.getLogger("api.requestlog")

#: Entries waiting to be written, at most (a Redis outage must not grow the process without bound).
_BUFFER = 10_000
#: Entries written per pipeline.
_BATCH = 500
#: Seconds between two writes of the buffer.
_INTERVAL = 0.25
#: Stream entries read per XREVRANGE while filtering.
_PAGE = 500
#: Stream entries one query looks at before it hands back a cursor (bounds a filter that rarely matches).
_SCAN_LIMIT = 20_000
#: The id the chat routes of every dialect answer under, when the route did not say (a request
#: refused before its handler ran: auth, limits, body size).
_DIALECT_PATHS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
    "/v1/completions": "completions",
    "/dashboard/api/chat": "chat",
}
_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")
_STATUS = re.compile(r"^(\d{3}|[1-5]xx|ok|error)$")


def caller_of(scope: Scope) -> tuple[str, str]:
    """(id, name) of who made a request: a team key, or ``master``, ``dashboard``, ``open``.

    The master key and the dashboard count as callers of their own (the request log and the fair
    queue treat them as keys); a request refused before authentication is ``anonymous``.
    """
    state = scope.get("state") or {}
    principal = state.get("principal")
    if principal is None:
        return "anonymous", "anonymous"
    if principal.key is not None:
        return str(principal.key.id), str(principal.key.name)
    if str(scope.get("path", "")).startswith("/dashboard/"):
        return "dashboard", "dashboard"
    return str(principal.kind), str(principal.kind)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def queue_wait(job: Any, now: float | None = None) -> float | None:
    """Seconds the request's job waited for a worker (so far, if none took it), or None without a job."""
    if job is None:
        return None
    started = job.started if job.started is not None else (time.monotonic() if now is None else now)
    return max(0.0, float(started - job.created))


def queue_wait_header(state: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """``x-queue-wait-ms`` for a response that is starting, when the request queued a job."""
    job = (state.get("obs") or {}).get("job")
    wait = queue_wait(job)
    return None if wait is None else (b"x-queue-wait-ms", str(round(wait * 1000)).encode())


def collect(scope: Scope, fields: dict[str, Any], started: float) -> None:
    """Called by the access-log middleware when a response has ended: queue its log entry.

    ``fields`` are the access log's own (status, model, timings, prompt/answer with LOG_PROMPTS).
    Only chat requests of a dialect are logged; nothing here waits on Redis.
    """
    state = scope.get("state") or {}
    obs: dict[str, Any] = state.get("obs") or {}
    job = obs.get("job")
    if job is not None and job.started is not None:  # how long this key's job waited (per-key metrics)
        caller_id, caller_name = job.caller
        metrics.key_queue_wait(caller_id, job.started - job.created)
    app = scope.get("app")
    request_log: RequestLog | None = getattr(getattr(app, "state", None), "request_log", None)
    if request_log is None or not request_log.enabled:
        return
    path = str(scope.get("path", ""))
    dialect = obs.get("dialect") or _DIALECT_PATHS.get(path)
    if dialect is None or scope.get("method") != "POST":
        return
    key_id, key_name = caller_of(scope)
    usage = getattr(job, "usage", None)
    client = scope.get("client")
    entry: dict[str, Any] = {
        "time": round(time.time(), 3),
        "request_id": state.get("request_id"),
        "key_id": key_id,
        "key_name": key_name,
        "dialect": dialect,
        "model": fields.get("model"),
        "target": getattr(job, "upstream", None),  # upstream/model that served it, once the worker said
        "status": fields.get("status"),
        "error_code": fields.get("error_code") or getattr(job, "error_code", None),
        "tokens_in": getattr(usage, "prompt_tokens", None),
        "tokens_out": getattr(usage, "completion_tokens", None),
        "ttft_ms": fields.get("ttft_ms"),
        "duration_ms": fields.get("duration_ms"),
        "queue_wait_ms": _ms(queue_wait(job, started + (fields.get("duration_ms") or 0) / 1000)),
        "stream": fields.get("stream"),
        "client": client[0] if client else None,
        "job_id": getattr(job, "job_id", None),
        "worker": getattr(job, "worker", None),
    }
    if "prompt" in fields:  # LOG_PROMPTS is on
        entry["prompt"] = fields["prompt"]
        entry["answer"] = fields.get("answer")
    request_log.add(entry)


@dataclass(frozen=True)
class Filters:
    """What ``GET /admin/requests`` and ``GET /v1/gateway/requests`` filter on (all optional)."""

    key: str | None = None  # a key's id or name
    own: str | None = None  # exactly this key id (a key reading its own requests)
    model: str | None = None
    status: str | None = None  # 200, 4xx, 5xx, ok, error
    dialect: str | None = None
    since: float | None = None  # unix seconds
    until: float | None = None

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.key is not None and self.key not in (entry.get("key_id"), entry.get("key_name")):
            return False
        if self.own is not None and entry.get("key_id") != self.own:
            return False
        if self.model is not None and entry.get("model") != self.model:
            return False
        if self.dialect is not None and entry.get("dialect") != self.dialect:
            return False
        when = entry.get("time") or 0
        if (self.since is not None and when < self.since) or (self.until is not None and when > self.until):
            return False
        return self.status is None or _status_matches(self.status, entry)


def _status_matches(wanted: str, entry: dict[str, Any]) -> bool:
    status = int(entry.get("status") or 0)
    failed = status >= 400 or bool(entry.get("error_code"))
    if wanted == "error":
        return failed
    if wanted == "ok":
        return not failed
    if wanted.endswith("xx"):
        return status // 100 == int(wanted[0])
    return status == int(wanted)


def _time_param(name: str, raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{name}': give unix seconds or an ISO 8601 time.", param=name, code="invalid_value"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_filters(params: Any, *, own: str | None = None) -> Filters:
    """Filters from query parameters; ``own`` (a key reading its own requests) ignores ``key``."""
    status = params.get("status") or None
    if status is not None and not _STATUS.match(status):
        raise InvalidRequest(
            "Invalid 'status': give a status code (200), a class (4xx), 'ok' or 'error'.",
            param="status",
            code="invalid_value",
        )
    return Filters(
        key=None if own is not None else (params.get("key") or None),
        own=own,
        model=params.get("model") or None,
        status=status,
        dialect=params.get("dialect") or None,
        since=_time_param("since", params.get("since")),
        until=_time_param("until", params.get("until")),
    )


def parse_cursor(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not _CURSOR.match(raw):
        raise InvalidRequest("Invalid 'cursor': pass back a next_cursor you were given.", param="cursor")
    return raw


class RequestLog:
    """One API process's writer of the request log, and the reader the routes use."""

    def __init__(self, redis: Redis, *, max_entries: int, max_age: float) -> None:
        self._redis = redis
        self.max_entries = max_entries
        self.max_age = max_age
        self._buffer: deque[bytes] = deque()
        self._dropped = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def add(self, entry: dict[str, Any]) -> None:
        """Queue one entry for the next write (never blocks; the oldest waiting entry goes when full)."""
        if len(self._buffer) >= _BUFFER:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(orjson.dumps(entry))
        if len(self._buffer) >= _BATCH:
            self._wake.set()

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="request-log")

    async def stop(self) -> None:
        """Stop the writer after one last write of what is waiting."""
        if self._task is None:
            return
        task, self._task = self._task, None
        await stop_task(task)
        with contextlib.suppress(RedisError, OSError):
            await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.warning("request log: cannot write to Redis (%s); %d entries waiting", exc, len(self._buffer))
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Write every waiting entry, in batches; on a Redis error the unwritten ones stay queued."""
        if self._dropped:
            log.warning("request log: %d entries dropped while Redis was unreachable", self._dropped)
            self._dropped = 0
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(_BATCH, len(self._buffer)))]
            async with self._redis.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.xadd(names.REQUEST_LOG, {"e": data}, maxlen=self.max_entries, approximate=True)
                if self.max_age > 0:
                    oldest = int((time.time() - self.max_age) * 1000)
                    pipe.xtrim(names.REQUEST_LOG, minid=oldest, approximate=True)
                await pipe.execute()
            for _ in batch:
                self._buffer.popleft()

    async def query(
        self, filters: Filters, *, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` matching entries, newest first, and the cursor of the next page (None: no more)."""
        out: list[dict[str, Any]] = []
        next_cursor: str | None = None
        cut: list[bool] = []
        async for entry, last_seen in self._scan(filters, cursor, _SCAN_LIMIT, cut):
            if entry is not None:
                out.append(entry)
            next_cursor = last_seen
            if len(out) >= limit:
                break
        else:
            if next_cursor is not None and not cut:
                next_cursor = None  # walked to the end of the range: nothing more
        return out, next_cursor

    async def export(self, filters: Filters, *, cursor: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every matching entry, newest first (for the JSON-lines export)."""
        async for entry, _ in self._scan(filters, cursor, None, []):
            if entry is not None:
                yield entry

    async def _scan(
        self, filters: Filters, cursor: str | None, scan_limit: int | None, cut: list[bool]
    ) -> AsyncIterator[tuple[dict[str, Any] | None, str]]:
        """(entry or None when it does not match, its stream id) for each entry of the range, newest
        first; ``cut`` gets an item when ``scan_limit`` stopped the walk before the range's end."""
        # Stream ids are the write time in ms; an entry is written a moment after its request
        # ended, so the id range is widened by a minute and the entry's own time decides.
        high = "+" if filters.until is None else str(int((filters.until + 60) * 1000))
        if cursor is not None:
            high = "(" + cursor
        low = "-" if filters.since is None else str(int(filters.since * 1000))
        scanned = 0
        while True:
            rows = await self._redis.xrevrange(names.REQUEST_LOG, max=high, min=low, count=_PAGE)
            for raw_id, data in rows:
                stream_id = raw_id.decode()
                scanned += 1
                try:
                    entry = orjson.loads(data[b"e"])
                except (KeyError, orjson.JSONDecodeError):
                    continue
                entry["id"] = stream_id
                yield (entry if filters.matches(entry) else None), stream_id
                if scan_limit is not None and scanned >= scan_limit:
                    cut.append(True)
                    return
            if len(rows) < _PAGE:
                return
            high = "(" + rows[-1][0].decode()
