"""A job's feed: the messages of one job's channel, in order, under the client-facing time limits.

A *feed* is the API's side of one job (the worker publishes, the feed follows); *stream* means
only an HTTP event stream (the client's SSE answer, or the upstream's).

:class:`JobFeed` turns the raw channel into ``("delta", text)``, ``("reasoning", text)``,
``("tool_call", call)`` and ``("done", reason)`` events, and raises a :class:`GatewayError`
for a worker error, a gap in the sequence numbers, a lost Redis connection or one of the time
limits:

- queue wait: no worker took the job within ``QUEUE_TIMEOUT`` (503, the job is withdrawn);
- first token: no text within ``FIRST_TOKEN_TIMEOUT`` after a worker took it (504);
- idle: nothing at all from the worker (not even its keep-alive) for ``IDLE_TIMEOUT`` (504):
  this is how a worker killed mid-answer is noticed;
- total: the whole answer took longer than ``TOTAL_TIMEOUT`` (504).

A job runs at most once (see ``worker.jobs.runner``), so a second ``start`` or a sequence number
already seen can only come from a re-run that should not exist: the feed then fails
(``job_rerun``) rather than mix two answers. Whatever ends a feed early, :meth:`JobFeed.close`
withdraws the job (from the queue, or aborts it on its worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from api.relay.hub import PubSubHub, Subscription
from api.relay.queue import JobQueue
from api.tenancy.usage import RequestUsage
from shared import messages
from shared.errors import GatewayError, GatewayTimeout, ServiceUnavailable, UpstreamError, from_wire
from shared.settings import Settings

log = logging.getLogger("api.feed")

#: ``delta`` / ``reasoning``: text; ``tool_call``: a :class:`shared.messages.ToolCall`; ``done``: the
#: finish reason.
Event = tuple[Literal["delta", "reasoning", "tool_call", "done"], Any]


class JobFeed:
    """The API's view of one running job. Use :meth:`next` until it returns ``done``, then :meth:`close`."""

    def __init__(
        self,
        *,
        hub: PubSubHub,
        queue: JobQueue,
        sub: Subscription,
        settings: Settings,
        on_close: Callable[[JobFeed], None] | None = None,
    ) -> None:
        self.job_id = sub.job_id
        self._on_close = on_close
        self._hub = hub
        self._queue = queue
        self._sub = sub
        self._settings = settings
        now = time.monotonic()
        self.created = now
        self.started: float | None = None  # a worker took the job
        self.first_token: float | None = None
        self._last_seen = now
        self._expected_seq = 0
        self._finished = False
        self._closed = False
        self.worker: str | None = None
        self.upstream: str | None = None  # the target (upstream/model) serving the answer
        self.caller: tuple[str, str] = ("open", "open")  # (id, name) of the key it runs for
        self.error_code: str | None = None  # the code of the error that ended it after its 200
        self.usage = RequestUsage()  # what this request used, for its key's usage counters

    @property
    def finished(self) -> bool:
        return self._finished

    def _deadline(self) -> tuple[float, str]:
        # Runs once per message: only the limit that comes first, and its error is built only
        # when it is raised.
        s = self._settings
        at, kind = self.created + s.total_timeout, "total"
        if self.started is None:
            if self.created + s.queue_timeout < at:
                at, kind = self.created + s.queue_timeout, "queue"
        else:
            if self._last_seen + s.idle_timeout < at:
                at, kind = self._last_seen + s.idle_timeout, "idle"
            if self.first_token is None and self.started + s.first_token_timeout < at:
                at, kind = self.started + s.first_token_timeout, "first_token"
        return at, kind

    def _limit_error(self, kind: str) -> GatewayError:
        s = self._settings
        if kind == "queue":
            return ServiceUnavailable(
                f"No worker took the request within {s.queue_timeout:g} s; the gateway is busy.",
                code="queue_timeout",
                retry_after=5,
            )
        if kind == "idle":
            return GatewayTimeout(
                f"The worker running this request went silent for {s.idle_timeout:g} s.", code="idle_timeout"
            )
        if kind == "first_token":
            return GatewayTimeout(
                f"The upstream sent no text within {s.first_token_timeout:g} s.", code="first_token_timeout"
            )
        return GatewayTimeout(f"The answer took longer than {s.total_timeout:g} s.", code="total_timeout")

    def abort(self, error: GatewayError) -> None:
        """End the feed from outside (the API is shutting down): :meth:`next` raises ``error``."""
        self._sub.put(error)

    async def next(self, wait: float | None = None, *, from_start: bool = False) -> Event | None:
        """The next event; None only if ``wait`` seconds passed first (the feed is intact).

        With ``from_start``, the ``wait`` counts from the moment a worker took the job: while the
        job waits in the queue, only the queue time limit ends the wait.
        """
        called = time.monotonic()
        sub = self._sub
        while True:
            give_up: float | None = None
            if wait is not None and not from_start:
                give_up = called + wait
            elif wait is not None and self.started is not None:
                give_up = self.started + wait
            deadline, kind = self._deadline()
            now = time.monotonic()
            timeout = deadline - now
            if give_up is not None and give_up < deadline:
                timeout = give_up - now
                if timeout <= 0:
                    return None
            if timeout <= 0:
                raise self._limit_error(kind)
            item = sub.take()
            if item is None:
                await sub.wait(timeout)
                item = sub.take()
                if item is None:
                    continue  # loop: the caller's wait or a deadline has passed
            event = self._handle(item)
            if event is not None:
                return event

    def _handle(self, item: bytes | GatewayError) -> Event | None:
        if isinstance(item, GatewayError):
            # The hub lost Redis, or the API is shutting down. Not marked finished: close() still
            # tries to withdraw the job, so no worker goes on calling the upstream for nobody.
            raise item
        msg = messages.decode(item)
        seq = msg["seq"]
        if seq < self._expected_seq or (msg["kind"] == "start" and self.started is not None):
            raise UpstreamError(
                "The job behind this answer was started a second time; the answer is dropped rather "
                "than mixed with another one.",
                code="job_rerun",
            )
        if seq > self._expected_seq:
            raise UpstreamError(
                f"Messages {self._expected_seq}..{seq - 1} of this answer were lost between worker and API.",
                code="stream_gap",
            )
        self._expected_seq = seq + 1
        now = time.monotonic()
        self._last_seen = now
        kind = msg["kind"]
        if "upstream" in msg:
            self.upstream = msg["upstream"]
        if kind == "delta":
            if self.first_token is None:
                self.first_token = now
            return ("delta", msg.get("text", ""))
        if kind == "reasoning":
            if self.first_token is None:
                self.first_token = now
            return ("reasoning", msg.get("text", ""))
        if kind == "tool_call":
            if self.first_token is None:
                self.first_token = now
            return ("tool_call", msg["call"])
        if kind == "start":
            self.started = now
            self.worker = msg.get("worker")
            return None
        if kind == "alive":
            return None
        self._finished = True
        if kind == "done":
            return ("done", msg.get("finish_reason", "stop"))
        raise from_wire(msg.get("error") or {})

    async def close(self) -> None:
        """Unsubscribe; if the job is still queued or running, withdraw or abort it."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close(self)
        self._hub.unsubscribe(self._sub)
        if not self._finished:
            try:
                await self._queue.cancel(self.job_id, key=self.caller[0])
            except Exception as exc:  # Redis down: the worker notices nobody listens
                log.warning("job %s: could not withdraw: %s", self.job_id, exc)
