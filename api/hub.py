"""One Redis pub/sub connection per API process, shared by every stream it serves.

Each request subscribes to its job's channel through :meth:`PubSubHub.subscribe`, which returns
only once Redis has *confirmed* the subscription (redis-py's ``subscribe()`` merely sends the
command; a job enqueued before the confirmation could publish into a channel nobody has joined
yet, and its client would wait forever). A single reader task dispatches each message to the
queue of the request that owns the channel.

If the connection drops, every subscriber gets a :class:`ServiceUnavailable` (messages published
meanwhile are gone: pub/sub is at-most-once), and the hub reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from shared import names
from shared.errors import GatewayError, ServiceUnavailable

log = logging.getLogger("api.hub")

#: What a subscription's queue carries: a raw channel message, or an error that ends the stream
#: (the hub lost Redis; the API is shutting down).
Item = bytes | GatewayError


def redis_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The gateway cannot reach Redis right now; try again shortly.",
                              code="redis_unavailable", retry_after=2)


@dataclass(eq=False)
class Subscription:
    """The receiving end of one job's channel."""

    job_id: str
    channel: bytes
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)


class PubSubHub:
    """Owns the process's pub/sub connection and dispatches messages by channel."""

    def __init__(self, redis: Redis, *, subscribe_timeout: float = 5.0) -> None:
        self._redis = redis
        self._subscribe_timeout = subscribe_timeout
        self._subs: dict[bytes, Subscription] = {}
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def active(self) -> int:
        """How many channels are subscribed now (streams waiting or in flight)."""
        return len(self._subs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub-hub")
        try:
            await asyncio.wait_for(self._connected.wait(), self._subscribe_timeout)
        except TimeoutError:
            log.warning("Redis pub/sub not reachable yet; the hub keeps trying")

    async def stop(self) -> None:
        self._closing = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close_pubsub()

    async def subscribe(self, job_id: str) -> Subscription:
        """Subscribe to ``job_id``'s channel and wait until Redis confirms it."""
        if not self._connected.is_set() or self._pubsub is None:
            raise redis_unavailable()
        channel = names.job_channel(job_id).encode()
        sub = Subscription(job_id, channel)
        confirmed = asyncio.get_running_loop().create_future()
        self._subs[channel] = sub
        self._confirm[channel] = confirmed
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(confirmed), self._subscribe_timeout)
        except (RedisError, OSError, TimeoutError, ServiceUnavailable) as exc:
            self._subs.pop(channel, None)
            raise redis_unavailable() from exc
        finally:
            self._confirm.pop(channel, None)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.channel, None) is None:
            return
        if self._pubsub is not None and self._connected.is_set():
            try:
                await self._pubsub.unsubscribe(sub.channel)
            except (RedisError, OSError):
                pass  # the connection is gone; so is the subscription

    async def _run(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                self._pubsub = self._redis.pubsub()
                await self._pubsub.subscribe(names.HUB_CHANNEL)
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._connected.is_set():
                    log.error("pub/sub connection lost: %s", exc)
                self._connected.clear()
                self._fail_all()
                await self._close_pubsub()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue

    async def _read_forever(self) -> None:
        assert self._pubsub is not None
        pubsub = self._pubsub
        subs = self._subs
        while True:
            response = await pubsub.parse_response(block=True)
            if response is None:
                continue
            kind = response[0]
            if kind == b"message":
                sub = subs.get(response[1])
                if sub is not None:
                    sub.queue.put_nowait(response[2])
                continue
            # subscribe / unsubscribe confirmations: let redis-py keep its bookkeeping.
            await pubsub.handle_message(response)  # type: ignore[no-untyped-call]  # redis-py is untyped here
            if kind == b"subscribe":
                channel = response[1]
                if channel == names.HUB_CHANNEL.encode():
                    self._connected.set()
                    log.info("pub/sub connected")
                waiter = self._confirm.get(channel)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _fail_all(self) -> None:
        err = ServiceUnavailable("The gateway lost its connection to Redis; the answer was interrupted.",
                                 code="redis_unavailable", retry_after=2)
        for sub in self._subs.values():
            sub.queue.put_nowait(err)
        self._subs.clear()
        for waiter in self._confirm.values():
            if not waiter.done():
                waiter.set_exception(err)

    async def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                pass
