"""arq's ``Worker``, woken by a Redis message instead of only by its poll timer.

arq finds jobs by polling the queue every ``poll_delay`` (0.5 s by default), and that delay
lands on every request's time to first token. The API publishes on ``shared.names.WAKE_CHANNEL``
in the same script that enqueues (or aborts) a job; each worker listens there and polls at once.
The poll timer stays as a fallback (``WORKER_POLL_DELAY``) for a wake-up lost while
reconnecting. A worker also wakes itself when one of its jobs ends, so a job that waited for a
free slot starts without waiting for the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.connections import create_pool
from arq.worker import Worker
from redis.exceptions import RedisError

from shared import names

log = logging.getLogger("worker")


class WakeableWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()

    async def _listen_for_wakeups(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(names.WAKE_CHANNEL)
                    delay = 0.1
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                        if message is not None:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("wake-up channel lost (%s); polling every %.2fs until it is back", exc, self.poll_delay_s)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def main(self) -> None:
        # Same as arq's Worker.main, with the poll timer replaced by "timer or wake-up".
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        log.info("worker starting: functions %s, queue %s", ", ".join(self.functions), self.queue_name)
        self.ctx["redis"] = self.pool
        self.ctx["worker"] = self
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen_for_wakeups(), name="wake-listener")
        try:
            while True:
                self._wake.clear()
                try:
                    await self._poll_iteration()
                except (RedisError, OSError) as exc:
                    log.error("queue poll failed (%s); retrying", exc)
                    await asyncio.sleep(min(1.0, self.poll_delay_s))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
