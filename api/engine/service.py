"""The chat service every dialect shares: start a job, then answer as a stream or as one body.

A dialect's route parses its request into a :class:`~api.engine.call.ChatCall`, then calls
:meth:`ChatService.start` and :meth:`ChatService.respond` with its
:class:`~api.engine.events.Dialect`; everything between (the queue, the job's messages, shaping,
time limits, cancellation, keep-alive, usage) happens here once for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.engine.call import ChatCall, check_emulation
from api.engine.events import Answer, Dialect, FinishReason, StreamEncoder, Usage
from api.engine.image_fetch import ImageFetcher
from api.engine.shaping import PieceKind, Shaped, Shaper
from api.http.access import note
from api.http.sse import EventSourceResponse
from api.relay.feed import Event, JobFeed
from api.relay.hub import PubSubHub, redis_unavailable
from api.relay.queue import JobQueue, new_job_id
from api.tenancy.limits import enforce_prompt_budget
from api.tenancy.requestlog import caller_of
from api.tenancy.usage import request_usage
from shared.errors import GatewayError, InternalError, ServiceUnavailable
from shared.messages import ToolCall
from shared.settings import Settings

log = logging.getLogger("api.chat")
#: Names the target (``upstream/model``) that served the answer.
UPSTREAM_HEADER = "x-gateway-upstream"
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, but give up (and cancel it) as soon as the client disconnects.

    ``work`` runs in the calling task; one watcher task cancels it if the client leaves.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _until_disconnect(request.receive)
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # our own cancel: the client left
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


class _JobEventSource(EventSourceResponse):
    """An SSE response that always closes its job feed, even when the client left before the
    body generator ever ran (its ``finally`` then never runs)."""

    def __init__(self, feed: JobFeed, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._feed.close())


class ChatService:
    """Runs chat calls through the queue; one per API process, kept in ``app.state``."""

    def __init__(self, *, settings: Settings, hub: PubSubHub, queue: JobQueue, images: ImageFetcher) -> None:
        self.settings = settings
        self.images = images
        self.hub = hub
        self.queue = queue
        #: Chat calls in flight in this process (queued, waiting or streaming); the graceful
        #: shutdown waits for this to empty.
        self.in_flight: set[JobFeed] = set()

    def abort_all(self, error: GatewayError) -> int:
        """End every call in flight with ``error`` (their jobs are withdrawn); returns how many."""
        for feed in self.in_flight:
            feed.abort(error)
        return len(self.in_flight)

    async def answer(self, request: Request, call: ChatCall, dialect: Dialect) -> Response:
        """Everything after parsing, for every dialect: fetch the image, check the prompt against
        the key's budget, queue the job, and answer as a stream or whole."""
        if call.image_url is not None and call.image_param is not None:  # fetched before the job exists
            call.image = await self.images.fetch(call.image_url, param=call.image_param)
        note(request, model=call.model, dialect=dialect.name)
        if call.emulated:  # TOOLS_EMULATION and the folded prompt's cap, whichever dialect folded it
            check_emulation(call, self.settings)
        enforce_prompt_budget(request, call.prompt_tokens)
        feed = await self.start(call, request.state.request_id, caller=caller_of(request.scope))
        note(request, job=feed)
        return await self.respond(request, call, feed, dialect)

    async def start(self, call: ChatCall, request_id: str, *, caller: tuple[str, str] = ("open", "open")) -> JobFeed:
        """Subscribe to a new job's channel (confirmed), then enqueue the job.

        ``caller`` is the (id, name) of the key it runs for (``api.tenancy.requestlog.caller_of``).
        """
        job_id = new_job_id()
        sub = await self.hub.subscribe(job_id)
        job = call.job(request_id)
        try:
            queued = await self.queue.enqueue(job_id, job, key=caller[0])  # waits in its key's fair share
        except (RedisError, OSError) as exc:
            self.hub.unsubscribe(sub)
            raise redis_unavailable(exc) from exc
        if not queued:
            self.hub.unsubscribe(sub)
            raise ServiceUnavailable(
                f"The gateway's queue is full ({self.settings.max_queue} requests); try again shortly.",
                code="queue_full",
                retry_after=2,
            )
        feed = JobFeed(hub=self.hub, queue=self.queue, sub=sub, settings=self.settings, on_close=self.in_flight.discard)
        feed.caller = caller
        self.in_flight.add(feed)
        return feed

    async def respond(self, request: Request, call: ChatCall, feed: JobFeed, dialect: Dialect) -> Response:
        feed.usage = request_usage(request)  # the key's usage, written when the request ends
        feed.usage.prompt_tokens = call.prompt_tokens
        if call.stream:
            return await self._stream(request, call, feed, dialect)
        return await self._whole(request, call, feed, dialect)

    async def _whole(self, request: Request, call: ChatCall, feed: JobFeed, dialect: Dialect) -> Response:
        parts: dict[PieceKind, list[str]] = {"content": [], "reasoning": []}
        tool_calls: list[ToolCall] = []

        async def collect() -> FinishReason:
            while True:
                kind, value = await _next(feed)
                if kind == "tool_call":
                    out = shaper.end() if not tool_calls else Shaped()
                    if not out.finish:
                        tool_calls.append(value)
                        shaper.count(value["arguments"])
                elif kind == "reasoning":
                    out = shaper.feed_reasoning(value)
                else:
                    out = shaper.feed(value) if kind == "delta" else shaper.end()
                for piece_kind, text in out.pieces:
                    parts[piece_kind].append(text)
                if out.finish or kind == "done":  # stop/length end it here; finally withdraws the job
                    return _reason(out.finish or value, tool_calls)

        shaper = _shaper(call)
        try:
            reason = await unless_disconnected(request, collect())
        except ClientGone:
            log.info("client left before its answer was ready; job %s withdrawn", feed.job_id)
            return Response(status_code=499)
        finally:
            await feed.close()
        feed.usage.completion_tokens = shaper.tokens
        answer = Answer(
            content="".join(parts["content"]),
            reasoning="".join(parts["reasoning"]),
            finish=reason,
            usage=Usage(call.prompt_tokens, shaper.tokens),
            tool_calls=tool_calls,
            stop_sequence=shaper.stop_hit,
        )
        headers = {"openai-processing-ms": _processing_ms(request)}
        if feed.upstream:
            headers[UPSTREAM_HEADER] = feed.upstream
        return dialect.whole(call, answer, headers)

    async def _stream(self, request: Request, call: ChatCall, feed: JobFeed, dialect: Dialect) -> Response:
        # Hold the response while the job waits in the queue (bounded by QUEUE_TIMEOUT), then
        # until the first piece (or error) arrives, for at most one ping interval: a full queue,
        # a queue timeout or an upstream failure before any text is then still a real HTTP status
        # with Retry-After, which clients (the openai SDK among them) retry by themselves. From
        # then on the stream is open and sends the dialect's ping every PING_INTERVAL.
        try:
            first = await unless_disconnected(request, feed.next(wait=self.settings.ping_interval, from_start=True))
        except ClientGone:
            await feed.close()
            return Response(status_code=499)
        except BaseException:
            await feed.close()
            raise
        encoder = dialect.stream_encoder(call)
        return _JobEventSource(
            feed,
            self._events(call, feed, first, encoder),
            sep="\n",
            ping=self.settings.ping_interval,
            ping_message_factory=encoder.ping,
            # the first piece (or the end) has arrived: it named the target serving it
            headers={"Cache-Control": "no-cache", **({UPSTREAM_HEADER: feed.upstream} if feed.upstream else {})},
        )

    async def _events(
        self, call: ChatCall, feed: JobFeed, first: Event | None, enc: StreamEncoder
    ) -> AsyncIterator[bytes]:
        shaper = _shaper(call)
        event = first
        calls = 0
        try:
            opening = enc.open()
            if opening:
                yield opening
            while True:
                if event is None:
                    event = await feed.next()
                    assert event is not None  # no wait given: next() returns an event or raises
                kind, value = event
                event = None
                if kind == "tool_call":
                    out = shaper.end() if not calls else Shaped()  # text held back goes out first
                elif kind == "reasoning":
                    out = shaper.feed_reasoning(value)
                else:
                    out = shaper.feed(value) if kind == "delta" else shaper.end()
                for piece_kind, text in out.pieces:
                    yield enc.content(text) if piece_kind == "content" else enc.reasoning(text)
                if kind == "tool_call" and not out.finish:
                    calls += 1
                    shaper.count(value["arguments"])
                    yield enc.tool_call(value)
                    continue
                if kind != "done" and not out.finish:
                    continue
                if kind != "done":  # stop/length ended the answer: withdraw the job now
                    await feed.close()
                reason = _reason(out.finish or value, calls)
                yield enc.finish(reason, Usage(call.prompt_tokens, shaper.tokens), shaper.stop_hit)
                return
        except GatewayError as exc:
            log.warning("stream of job %s failed: %r", feed.job_id, exc)
            feed.usage.failed = True
            feed.error_code = exc.code
            yield enc.error(exc)
        except Exception:  # a bug: the client still gets an error event, not a cut stream
            log.exception("stream of job %s failed", feed.job_id)
            yield enc.error(InternalError("The gateway hit an internal error; it has been logged."))
        finally:
            feed.usage.completion_tokens = shaper.tokens
            await asyncio.shield(feed.close())


def _reason(reason: str, calls: object) -> FinishReason:
    """The finish reason: ``tool_calls`` when the answer ended with calls (and was not cut)."""
    if calls and reason == "stop":
        return "tool_calls"
    if reason in ("stop", "length", "tool_calls"):
        return reason  # type: ignore[return-value]
    return "stop"


def _shaper(call: ChatCall) -> Shaper:
    return Shaper(stop=call.stop, max_tokens=call.max_tokens, reasoning=call.reasoning)


def _processing_ms(request: Request) -> str:
    """``openai-processing-ms``: time since the request arrived (see RequestIdMiddleware)."""
    received = getattr(request.state, "received", None)
    return str(round((time.monotonic() - received) * 1000)) if received is not None else "0"


async def _next(feed: JobFeed) -> Event:
    event = await feed.next()
    assert event is not None  # no wait given: next() returns an event or raises
    return event
