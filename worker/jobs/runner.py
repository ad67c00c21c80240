"""The chat job: run one answer upstream and publish its pieces on the job's channel.

The upstream client runs on this worker's event loop; each batch of pieces it reads (the pieces
that arrived together) is published at once as one message, never delayed to wait for more.
Messages go out through the process's :class:`~worker.jobs.publish.PipelinedConnection`: written
without waiting for Redis to answer, in order.

Guarantees (see ``shared.messages``): every message numbered, exactly one terminal message, and
a job runs upstream at most once, whatever arq re-runs (after a worker died, or a job cancelled
at shutdown): the first run claims ``decopy:run:<job>``, and a later run finding the claim is
dropped without calling the upstream (the rule, with arq's ``max_tries``, is in :mod:`shared.queue`).
Its client, if any, was already told by the first run (an ``interrupted`` error) or by the
API's idle timeout, so nobody waits for a re-run.

Routes (see ``worker.upstream.router``): a job's model id names a route, an ordered list of
targets. A failure before the first piece of the answer went out moves to the route's next
target (skipping those whose circuit breaker is open); after it, never. The first message with a
piece says which target serves the answer (``upstream``), for the API's header and logs.

A job also stops as soon as nobody listens: every PUBLISH answers how many subscribers got the
message, and 0 means the client's API unsubscribed or died. The job looks at that answer when
it publishes its next message (one piece later), or the heartbeat does while the upstream is
silent; the upstream call is then closed.

A job with tools or a JSON output format is read through :class:`shared.tools.reader.AnswerReader`
(tool calls published whole and validated, JSON checked); when that answer cannot be given and
nothing has gone out yet, the upstream is asked once more with a correction appended to the
prompt (:meth:`ChatRunner._attempts`). A job without them takes the plain path, unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import messages, names
from shared.errors import GatewayError, InternalError, ServiceUnavailable
from shared.messages import ChatJob, Message, ToolCall
from shared.queue import RUN_KEY_TTL, StartOnce
from shared.settings import Settings
from shared.tools.reader import Action, AnswerReader, Counts, Emulation, Refusal, Retry
from worker.jobs.budget import UpstreamBudget, UpstreamBusy
from worker.jobs.publish import PipelinedConnection, Reply
from worker.upstream.base import Finish, Reasoning, ToolCallPiece, Upstream, UpstreamFailure
from worker.upstream.router import Choice, Router

log = logging.getLogger("worker.job")


def backoff_delay(
    attempt: int, base: float, ceiling: float, rand: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): exponential (``base`` doubling
    per attempt, capped at ``ceiling``) with "equal jitter" (a random half on top of a fixed
    half), so workers that failed together do not retry in lockstep."""
    top = min(ceiling, base * 2 ** (attempt - 1))
    return float(top / 2 + rand(0, top / 2))


class NobodyListening(Exception):
    """A message reached no subscriber: the client's API left (or died); stop the job."""


class Publisher:
    """Numbers and publishes one job's messages."""

    def __init__(self, out: PipelinedConnection, job_id: str) -> None:
        self._out = out
        self.job_id = job_id
        self.channel = names.job_channel(job_id)
        self._run_key = names.job_run_key(job_id)
        self.seq = 0
        self.text_sent = False
        self.terminated = False
        self.last_sent = time.monotonic()
        self._last: Reply | None = None  # the reply to the latest message not yet looked at
        self.task: asyncio.Task[Any] | None = None  # the job's task (the heartbeat may stop it)
        self.stopped = False  # stopped by the heartbeat: nobody listens
        self.upstream = ""  # the target serving this attempt (told with the first piece)
        self.finish = "stop"  # the finish reason the upstream gave, if any

    def nobody_listening(self) -> bool:
        """Did the latest message whose reply is in reach no subscriber? (Raises a Redis error it met.)"""
        last = self._last
        if last is None or not last.done:
            return False
        self._last = None
        return bool(last.result() == 0)

    async def _publish(self, message: Message, *, check: bool = True) -> Reply:
        message["seq"] = self.seq
        self.seq += 1
        if check and self.nobody_listening():
            raise NobodyListening(self.job_id)
        reply = await self._out.send("PUBLISH", self.channel, messages.encode(message))
        self._last = reply
        self.last_sent = time.monotonic()
        return reply

    async def send(self, message: Message) -> None:
        await self._publish(message)

    async def delta(self, text: str) -> None:
        if not self.text_sent:
            await self._first({"kind": "delta", "text": text})
            return
        await self._publish({"kind": "delta", "text": text})

    async def _first(self, message: Message) -> None:
        # First piece: recorded (the log of a refused re-run says whether text went out). Its
        # reply is not waited for; a Redis error shows on the messages after it. It names the
        # target that serves the answer.
        self.text_sent = True
        await self._out.send("SET", self._run_key, b"text", "EX", RUN_KEY_TTL)
        if self.upstream:
            message["upstream"] = self.upstream
        await self._publish(message)

    async def piece(self, message: Message) -> None:
        """A typed piece (``reasoning``, ``tool_call``) from an upstream that marks it itself."""
        if not self.text_sent:
            await self._first(message)
        else:
            await self._publish(message)

    async def tool_call(self, call: ToolCall) -> None:
        """One whole tool call read out of an emulated answer (a piece of the answer, as text is)."""
        await self.piece({"kind": "tool_call", "call": call})

    async def _terminal(self, message: Message) -> None:
        self.terminated = True
        reply = await self._publish(message, check=False)
        await reply.wait()  # the job ends once Redis has taken its last message

    async def done(self, reason: str = "stop") -> None:
        message: Message = {"kind": "done", "finish_reason": reason}
        if not self.text_sent and self.upstream:
            message["upstream"] = self.upstream  # an empty answer was still served by someone
        await self._terminal(message)

    async def error(self, err: GatewayError) -> None:
        await self._terminal({"kind": "error", "error": err.to_wire()})


class ChatRunner:
    """Runs chat jobs for one worker process (kept in arq's ``ctx``)."""

    def __init__(
        self,
        *,
        settings: Settings,
        redis: Redis,
        upstream: Upstream,
        worker_id: str,
        on_outcome: Callable[[str, str | None], None] | None = None,
        on_emulation: Callable[[str, Counts, str | None], None] | None = None,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.upstream = upstream
        self.router = router  # routes and breakers; None: every job goes to ``upstream``
        self.worker_id = worker_id
        self.out = PipelinedConnection(redis)
        self._on_outcome = on_outcome or (lambda outcome, kind: None)
        #: Called after each emulated attempt: the model, what the reader counted, and the
        #: retry it asked for ("call", "no_call", "json" or None).
        self._on_emulation = on_emulation or (lambda model, counts, retry: None)
        self.budget = UpstreamBudget(redis, settings)  # the pool-wide upstream budget
        self._active: set[Publisher] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._start = StartOnce(redis)  # the queue protocol's start-at-most-once (shared.queue)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self.router is not None:
            await self.router.aclose()
        await self.upstream.aclose()
        await self.out.close()

    async def run(self, job_id: str, job: ChatJob) -> str:
        """The arq job body; returns the outcome (also logged)."""
        try:
            return await self._run(job_id, job)
        finally:
            # The upstream lease the fair claim took with the job, if the job never used it
            # (refused as a re-run, dropped, withdrawn): freed now rather than when it expires.
            await self.budget.job_ended(job_id)

    async def _run(self, job_id: str, job: ChatJob) -> str:
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="job-heartbeat")
        pub = Publisher(self.out, job_id)
        start: Message = {"seq": 0, "kind": "start", "worker": self.worker_id}
        listeners, recorded = await self._start(job_id, messages.encode(start))
        if listeners == -1:
            log.warning(
                "job %s: re-run refused (a job runs upstream at most once; text %s out)",
                job_id,
                "went" if recorded == b"text" else "had not gone",
            )
            return self._outcome("rerun_refused")
        if listeners == 0:
            log.info("job %s: nobody is waiting for it any more; dropped", job_id)
            return self._outcome("dropped")
        pub.seq = 1  # the start message was 0
        pub.task = asyncio.current_task()
        self._active.add(pub)
        try:
            return await self._attempts(pub, job)
        except NobodyListening:
            return self._abandoned(pub)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pub.stopped and task is not None and task.uncancel() == 0:  # the heartbeat's own stop
                return self._abandoned(pub)
            if not pub.terminated:
                await asyncio.shield(
                    self._safe_error(
                        pub,
                        ServiceUnavailable(
                            "The answer was interrupted: the worker stopped or the request was withdrawn.",
                            code="interrupted",
                            retry_after=1,
                        ),
                    )
                )
            self._outcome("cancelled")
            raise
        except Exception as exc:  # a bug or a lost Redis: tell the client, keep the worker alive
            log.exception("job %s: failed: %s", job_id, exc)
            if not pub.terminated:
                await self._safe_error(
                    pub,
                    InternalError("The worker running this request failed; it has been logged.", code="worker_error"),
                )
            return self._outcome("crashed")
        finally:
            self._active.discard(pub)

    def _abandoned(self, pub: Publisher) -> str:
        log.info("job %s: its client's API stopped listening; upstream call closed", pub.job_id)
        return self._outcome("abandoned")

    async def _attempts(self, pub: Publisher, job: ChatJob) -> str:
        s = self.settings
        # The route's targets in order; a single target (every default route) retries
        # as before: UPSTREAM_RETRIES more attempts with backoff. With more, a failure before the
        # first piece moves to the next target at once; backoff only before a target is tried again.
        if self.router is not None:
            choices = await self.router.choices(job)
        else:
            choices = [Choice(self.upstream.name, self.upstream, job)]
        limit = s.upstream_retries + len(choices)
        tried: set[int] = set()
        last: UpstreamFailure | None = None
        rounds = 0
        attempt = 0
        emulation = Emulation.of(job)  # None: no tools, no JSON output (the plain path)
        corrected = False
        reason = "stop"
        while True:
            attempt += 1
            index = await self._pick(choices, tried, first=last is None)
            if index is None:  # every target left is skipped by its breaker: the last failure stands
                assert last is not None
                await pub.error(last.to_gateway_error(attempt - 1))
                return self._outcome("failed", last.kind)
            choice = choices[index]
            pub.upstream = choice.label
            try:
                async with self.budget.slot(pub):  # waits for the upstream budget, holds it for the call
                    if emulation is None or choice.native_tools:
                        await self._one_attempt(pub, choice.job, choice)
                        reason = pub.finish
                    else:
                        reason = await self._emulated_attempt(
                            pub, choice.job, choice, emulation, may_retry=not corrected
                        )
            except Retry as retry:  # nothing went out: ask once more, with the correction
                log.info("job %s: corrective retry (%s)", pub.job_id, retry.reason)
                corrected = True
                choices[index] = dataclasses.replace(
                    choice, job={**choice.job, "prompt": choice.job["prompt"] + retry.correction}
                )
                attempt -= 1  # not an upstream failure: the retry budget for those stays whole
                continue
            except Refusal as refusal:
                await pub.error(refusal.error)
                return self._outcome("refused")
            except UpstreamBusy as busy:  # no budget within QUEUE_TIMEOUT, or the client left
                await pub.error(busy)
                return self._outcome(busy.outcome)
            except UpstreamFailure as failure:
                log.warning("job %s: attempt %d (%s) failed: %s", pub.job_id, attempt, choice.label, failure.message)
                self._on_outcome("upstream_error", failure.kind)
                last = failure
                if self.router is not None:
                    await self.router.breakers.failed(choice.label, failure.message)
                tried.add(index)
                untried = len(tried) < len(choices)
                if pub.text_sent or attempt >= limit or not (failure.retryable or untried):
                    await pub.error(failure.to_gateway_error(attempt))
                    return self._outcome("failed", failure.kind)
                if not untried:
                    rounds += 1
                    tried.clear()
                    await asyncio.sleep(backoff_delay(rounds, s.upstream_backoff_base, s.upstream_backoff_max))
                continue  # (the heartbeat keeps the client's stream alive meanwhile)
            if self.router is not None:
                await self.router.breakers.succeeded(choice.label)
            await pub.done(reason)
            return self._outcome("completed")

    async def _pick(self, choices: list[Choice], tried: set[int], *, first: bool) -> int | None:
        """The next target not tried in this round whose breaker lets a request through.
        Skipped targets count as tried. None: none is left. When no target of the route is let
        through at all, the first is tried anyway (a route never refuses for its breakers alone)."""
        if self.router is None or len(choices) == 1:
            return 0 if 0 not in tried else None
        for index, choice in enumerate(choices):
            if index in tried:
                continue
            if await self.router.breakers.allow(choice.label):
                return index
            log.info("target %s skipped: its circuit breaker is open", choice.label)
            tried.add(index)
        return 0 if first else None

    async def _one_attempt(self, pub: Publisher, job: ChatJob, choice: Choice | None = None) -> None:
        upstream = choice.upstream if choice is not None else self.upstream
        pieces = upstream.pieces(job)
        try:
            async for batch in pieces:
                if type(batch) is list:  # text: the hot path (decopy yields nothing else)
                    await pub.delta(batch[0] if len(batch) == 1 else "".join(batch))
                elif isinstance(batch, Reasoning):  # typed pieces of other upstreams
                    await pub.piece({"kind": "reasoning", "text": batch.text})
                elif isinstance(batch, ToolCallPiece):
                    await pub.piece({"kind": "tool_call", "call": batch.call})
                elif isinstance(batch, Finish):
                    pub.finish = batch.reason
        finally:
            # Closing it ends the upstream call at once, whatever stopped the loop.
            await pieces.aclose()  # type: ignore[attr-defined]  # an async generator

    async def _emulated_attempt(
        self, pub: Publisher, job: ChatJob, choice: Choice, emulation: Emulation, *, may_retry: bool
    ) -> str:
        """One attempt of a job with tools or a JSON format on an upstream that takes one text;
        returns the finish reason."""
        reader = AnswerReader(emulation, may_retry=may_retry)
        pieces = choice.upstream.pieces(job)
        retry: str | None = None
        try:
            async for batch in pieces:
                if not isinstance(batch, list):  # an upstream that marks pieces itself, tools not native
                    if isinstance(batch, Reasoning):
                        await pub.piece({"kind": "reasoning", "text": batch.text})
                    continue  # (a Finish says nothing the reader does not decide itself)
                await self._publish_actions(pub, reader.feed(batch[0] if len(batch) == 1 else "".join(batch)))
                if reader.done:  # e.g. the one call parallel_tool_calls=false allows: stop the upstream now
                    break
            else:
                await self._publish_actions(pub, reader.end())
        except Retry as exc:
            retry = exc.reason
            raise
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]  # an async generator
            self._on_emulation(job["model"], reader.counts, retry)
        return reader.finish_reason

    async def _publish_actions(self, pub: Publisher, actions: list[Action]) -> None:
        for action in actions:
            if action[0] == "text":
                await pub.delta(action[1])
            else:
                await pub.tool_call(action[1])

    async def _beat(self) -> None:
        """While a job's upstream is silent, tell its client it is alive; stop jobs nobody listens
        to; drop the publish connection if Redis stopped answering (its jobs then fail)."""
        beat = self.settings.worker_heartbeat
        tick = min(max(beat / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(tick)
            try:
                self.out.stalled(self.settings.redis_timeout + beat)
                now = time.monotonic()
                for pub in list(self._active):
                    if pub.terminated or pub.stopped:
                        continue
                    try:
                        if pub.nobody_listening():
                            pub.stopped = True
                            if pub.task is not None:
                                pub.task.cancel()
                            continue
                        if now - pub.last_sent >= beat:
                            await pub.send({"kind": "alive"})
                    except (NobodyListening, RedisError, OSError):
                        pass  # the job meets it itself on its next message
            except Exception:  # a bug here must not stop the heartbeat of every job
                log.exception("job heartbeat failed; going on")

    async def _safe_error(self, pub: Publisher, err: GatewayError) -> None:
        try:
            await pub.error(err)
        except Exception as exc:
            log.warning("job %s: could not publish its error: %s", pub.job_id, exc)

    def _outcome(self, outcome: str, kind: str | None = None) -> str:
        self._on_outcome(outcome, kind)
        return outcome


async def chat(ctx: dict[str, Any], job: ChatJob) -> str:
    """arq job function (registered under ``shared.names.CHAT_FUNCTION``)."""
    runner: ChatRunner = ctx["runner"]
    started = time.monotonic()
    # Which worker took which job (and which try it is): what an operator needs after a crash.
    log.info("job %s request=%s taken (try %s)", ctx["job_id"], job["request_id"], ctx.get("job_try"))
    outcome = await runner.run(ctx["job_id"], job)
    log.info(
        "job %s request=%s model=%s outcome=%s took=%.3fs",
        ctx["job_id"],
        job["request_id"],
        job["model"],
        outcome,
        time.monotonic() - started,
    )
    return outcome
