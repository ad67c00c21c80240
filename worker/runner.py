"""The chat job: run one answer upstream and publish its pieces on the job's channel.

The upstream client is synchronous and runs in this worker's thread pool; pieces cross to the
event loop through a queue and are published as they come, batched when several arrive together
(one Redis call per batch, never a delay added to wait for more).

Guarantees (see ``shared.messages``): every message numbered, exactly one terminal message, and
a job runs upstream at most once, whatever arq re-runs (after a worker died, or a job cancelled
at shutdown): the first run claims ``decopy:run:<job>``, and a later run finding the claim is
dropped without calling the upstream. Its client, if any, was already told by the first run
(an ``interrupted`` error) or by the API's idle timeout, so nobody waits for a re-run.

A job also stops as soon as nobody listens: every PUBLISH answers how many subscribers got the
message, and 0 means the client's API unsubscribed or died; the upstream call is then closed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.asyncio import Redis

from shared import messages, names
from shared.errors import GatewayError, InternalError, ServiceUnavailable
from shared.messages import ChatJob, Message
from shared.settings import Settings
from worker.budget import UpstreamBudget, UpstreamBusy
from worker.upstream.base import Call, Upstream, UpstreamFailure

log = logging.getLogger("worker.job")

_END = object()
RUN_KEY_TTL = 3600


def backoff_delay(attempt: int, base: float, ceiling: float, rand: Callable[[float, float], float] = random.uniform
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

    def __init__(self, redis: Redis, job_id: str) -> None:
        self._redis = redis
        self.job_id = job_id
        self.channel = names.job_channel(job_id)
        self._run_key = names.job_run_key(job_id)
        self.seq = 0
        self.text_sent = False
        self.terminated = False

    def _check_heard(self, receivers: int, message: Message) -> None:
        if receivers == 0 and message["kind"] not in ("done", "error"):
            raise NobodyListening(self.job_id)

    async def send(self, message: Message) -> None:
        message["seq"] = self.seq
        self.seq += 1
        self._check_heard(await self._redis.publish(self.channel, messages.encode(message)), message)

    async def delta(self, text: str) -> None:
        message: Message = {"seq": self.seq, "kind": "delta", "text": text}
        self.seq += 1
        if self.text_sent:
            self._check_heard(await self._redis.publish(self.channel, messages.encode(message)), message)
            return
        # First text: record it (the log of a refused re-run says whether text went out) in the
        # same round trip as the publish.
        self.text_sent = True
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._run_key, b"text", ex=RUN_KEY_TTL)
            pipe.publish(self.channel, messages.encode(message))
            _, receivers = await pipe.execute()
        self._check_heard(receivers, message)

    async def done(self, reason: str = "stop") -> None:
        self.terminated = True
        await self.send({"kind": "done", "finish_reason": reason})

    async def error(self, err: GatewayError) -> None:
        self.terminated = True
        await self.send({"kind": "error", "error": err.to_wire()})


class ChatRunner:
    """Runs chat jobs for one worker process (kept in arq's ``ctx``)."""

    def __init__(self, *, settings: Settings, redis: Redis, upstream: Upstream, worker_id: str,
                 on_outcome: Callable[[str, str | None], None] | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.upstream = upstream
        self.worker_id = worker_id
        self.executor = ThreadPoolExecutor(max_workers=settings.worker_concurrency, thread_name_prefix="upstream")
        self._on_outcome = on_outcome or (lambda outcome, kind: None)
        self.budget = UpstreamBudget(redis, settings)  # [limits] the pool-wide upstream budget

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.upstream.close()

    async def run(self, job_id: str, job: ChatJob) -> str:
        """The arq job body; returns the outcome (also logged)."""
        pub = Publisher(self.redis, job_id)
        run_key = names.job_run_key(job_id)
        if not await self.redis.set(run_key, b"claimed", nx=True, ex=RUN_KEY_TTL):
            went_out = await self.redis.get(run_key) == b"text"
            log.warning("job %s: re-run refused (a job runs upstream at most once; text %s out)", job_id,
                        "went" if went_out else "had not gone")
            return self._outcome("rerun_refused")
        listeners = await self.redis.pubsub_numsub(pub.channel)
        if not listeners or listeners[0][1] == 0:
            log.info("job %s: nobody is waiting for it any more; dropped", job_id)
            return self._outcome("dropped")
        try:
            await pub.send({"kind": "start", "worker": self.worker_id})
            return await self._attempts(pub, job)
        except NobodyListening:
            log.info("job %s: its client's API stopped listening; upstream call closed", job_id)
            return self._outcome("abandoned")
        except asyncio.CancelledError:
            if not pub.terminated:
                await asyncio.shield(self._safe_error(pub, ServiceUnavailable(
                    "The answer was interrupted: the worker stopped or the request was withdrawn.",
                    code="interrupted", retry_after=1)))
            self._outcome("cancelled")
            raise
        except Exception as exc:  # a bug or a lost Redis: tell the client, keep the worker alive
            log.exception("job %s: failed: %s", job_id, exc)
            if not pub.terminated:
                await self._safe_error(pub, InternalError(
                    "The worker running this request failed; it has been logged.", code="worker_error"))
            return self._outcome("crashed")

    async def _attempts(self, pub: Publisher, job: ChatJob) -> str:
        s = self.settings
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.budget.slot(pub):  # [limits] waits for the upstream budget, holds it for the call
                    await self._one_attempt(pub, job)
            except UpstreamBusy as busy:  # [limits] no budget within QUEUE_TIMEOUT, or the client left
                await pub.error(busy)
                return self._outcome(busy.outcome)
            except UpstreamFailure as failure:
                log.warning("job %s: attempt %d failed: %s", pub.job_id, attempt, failure.message)
                self._on_outcome("upstream_error", failure.kind)
                if pub.text_sent or not failure.retryable or attempt > s.upstream_retries:
                    await pub.error(failure.to_gateway_error(attempt))
                    return self._outcome("failed", failure.kind)
                await self._backoff(pub, attempt)
                continue
            await pub.done("stop")
            return self._outcome("completed")

    async def _backoff(self, pub: Publisher, attempt: int) -> None:
        s = self.settings
        delay = backoff_delay(attempt, s.upstream_backoff_base, s.upstream_backoff_max)
        while delay > 0:
            step = min(delay, s.worker_heartbeat)
            await asyncio.sleep(step)
            delay -= step
            if delay > 0:
                await pub.send({"kind": "alive"})

    async def _one_attempt(self, pub: Publisher, job: ChatJob) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        call = Call()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed (worker shutting down): nobody to tell
                call.cancel()

        def produce() -> None:
            stream = self.upstream.stream(job, call)
            try:
                for batch in stream:
                    if call.cancelled.is_set():
                        return
                    put(batch)
                put(_END)
            except BaseException as exc:  # handed to the event loop, raised there
                put(exc)
            finally:
                stream.close()

        loop.run_in_executor(self.executor, produce)
        heartbeat = self.settings.worker_heartbeat
        try:
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        item = await queue.get()
                except TimeoutError:
                    await pub.send({"kind": "alive"})
                    continue
                texts: list[str] = []
                while True:
                    if item is _END:
                        if texts:
                            await pub.delta("".join(texts))
                        return
                    if isinstance(item, BaseException):
                        if texts:
                            await pub.delta("".join(texts))
                        raise item
                    texts.extend(item)
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                await pub.delta("".join(texts))
        finally:
            # Ends the upstream read at once (shuts its socket down); the thread then returns
            # by itself. Not awaited: a cancelled job must not wait on a slow create-job call.
            call.cancel()

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
    log.info("job %s request=%s model=%s outcome=%s took=%.3fs", ctx["job_id"], job["request_id"], job["model"],
             outcome, time.monotonic() - started)
    return outcome
