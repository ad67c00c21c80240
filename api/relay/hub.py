"""One Redis pub/sub connection per API process, shared by every stream it serves.

Each request subscribes to its job's channel through :meth:`PubSubHub.subscribe`, which returns
only once Redis has *confirmed* the subscription (a job enqueued before the confirmation could
publish into a channel nobody has joined yet, and its client would wait forever). The connection's
reader dispatches each message to the :class:`Subscription` of the request that owns the channel.

The reader does not go through redis-py's ``PubSub``: its ``parse_response`` / ``handle_message``
path costs several coroutine layers, a timeout scope and a dict lookup chain per message, which
was about a fifth of the API's CPU per stream. redis-py still opens the connection (address,
TLS, AUTH, client name: everything in ``REDIS_URL``); the hub then takes over its socket
(through :mod:`shared.redis_fence`) with a protocol of its own (:class:`_Reader`) that parses
every complete reply of each chunk with hiredis and dispatches them right in the event loop's
read callback (no stream reader, no task switch), and writes its
commands itself, UNSUBSCRIBEs coalesced per event-loop turn.

If the connection drops, every subscriber gets a :class:`ServiceUnavailable` (messages published
meanwhile are gone: pub/sub is at-most-once), and the hub reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from shared import names, redis_trouble
from shared.backoff import Backoff
from shared.errors import GatewayError, RedisUnavailable, ServiceUnavailable
from shared.redis_fence import stream_writer

log = logging.getLogger("api.hub")

#: What a subscription carries: a raw channel message, or an error that ends the stream
#: (the hub lost Redis; the API is shutting down).
Item = bytes | GatewayError

_MESSAGE = b"message"
_SUBSCRIBE = b"subscribe"


def redis_unavailable(exc: BaseException | None = None) -> RedisUnavailable:
    """The error for a subscription Redis could not confirm (callers outside the hub use it too);
    given the Redis error, it says what Redis did (out of memory is not unreachable)."""
    if exc is not None:
        return redis_trouble.unavailable(exc)
    return RedisUnavailable()


def _command(name: bytes, channels: list[bytes]) -> bytes:
    """One command in RESP, the protocol Redis reads (what redis-py's ``pack_command`` writes)."""
    parts = [b"*%d\r\n$%d\r\n%b\r\n" % (len(channels) + 1, len(name), name)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(ch), ch) for ch in channels)
    return b"".join(parts)


class Subscription:
    """The receiving end of one job's channel: the items the hub delivered, oldest first.

    A plain list and at most one waiting future, rather than an ``asyncio.Queue`` (three deques
    and a loop reference per stream, and several calls per message): there is exactly one
    reader, the request's :class:`api.relay.feed.JobFeed`.

    The reader's time limits move later with every message (the idle limit counts from the last
    one), so :meth:`wait` keeps one timer and moves it only when a wait must end *sooner* than
    the timer would fire; a timer that fires too early just wakes the reader, which waits again.
    That spares a timer per message. :meth:`close` cancels it.
    """

    __slots__ = ("job_id", "channel", "_items", "_waiter", "_loop", "_timer")

    def __init__(self, job_id: str, channel: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.job_id = job_id
        self.channel = channel
        self._items: list[Item] = []
        self._waiter: asyncio.Future[None] | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() system call on each call (Python 3.11).
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None

    def put(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> Item | None:
        """The oldest item not taken yet, or None."""
        return self._items.pop(0) if self._items else None

    async def wait(self, timeout: float) -> None:
        """Return once an item is there, or after ``timeout`` seconds at the latest (possibly sooner)."""
        if self._items:
            return
        loop = self._loop
        when = loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(when, self._ring)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _ring(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Drop the timer (the stream is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Reader(asyncio.Protocol):
    """The pub/sub connection's protocol: parses what arrives with hiredis and dispatches it.

    Every complete reply of a chunk is handled in the event loop's callback for that chunk, in
    one go (under load one chunk holds many messages).
    """

    def __init__(self, hub: PubSubHub, transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self._parser = hiredis.Reader()
        self._transport = transport
        #: Fails with the reason once the connection is gone (or unusable).
        self.lost: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        if self.lost.done():
            return
        parser = self._parser
        try:
            parser.feed(data)
            replies = []
            while (reply := parser.gets()) is not False:
                replies.append(reply)
            self._hub._dispatch(replies)
        except Exception as exc:  # a protocol error or an error reply: the connection is unusable
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._fail(RedisConnectionError("Redis closed the pub/sub connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc if isinstance(exc, OSError) else RedisConnectionError("Redis closed the pub/sub connection"))

    def _fail(self, exc: Exception) -> None:
        if not self.lost.done():
            if not isinstance(exc, (RedisError, OSError)):
                exc = RedisConnectionError(f"unreadable reply on the pub/sub connection: {exc!r}")
            self.lost.set_exception(exc)

    def close(self) -> None:
        if not self.lost.done():
            self.lost.cancel()
        self._transport.close()


class PubSubHub:
    """Owns the process's pub/sub connection and dispatches messages by channel."""

    def __init__(self, redis: Redis, *, subscribe_timeout: float = 5.0) -> None:
        self._redis = redis
        self._subscribe_timeout = subscribe_timeout
        self._subs: dict[bytes, Subscription] = {}
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._conn: AbstractConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: _Reader | None = None
        self._hub_channel = names.HUB_CHANNEL.encode()
        self._leaving: list[bytes] = []  # channels to UNSUBSCRIBE at the end of this event-loop turn
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._backoff = Backoff()  # between reconnections

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
        await self._close_connection()

    async def subscribe(self, job_id: str) -> Subscription:
        """Subscribe to ``job_id``'s channel and wait until Redis confirms it."""
        if not self._connected.is_set() or self._writer is None:
            raise redis_unavailable()
        channel = names.job_channel(job_id).encode()
        loop = asyncio.get_running_loop()
        sub = Subscription(job_id, channel, loop)
        confirmed = loop.create_future()
        self._subs[channel] = sub
        self._confirm[channel] = confirmed
        try:
            self._write(_command(b"SUBSCRIBE", [channel]))
            async with asyncio.timeout(self._subscribe_timeout):
                await confirmed
        except (RedisError, OSError, TimeoutError, ServiceUnavailable) as exc:
            self._subs.pop(channel, None)
            raise redis_unavailable() from exc
        finally:
            self._confirm.pop(channel, None)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        if self._subs.pop(sub.channel, None) is None:
            return
        if self._writer is not None and self._connected.is_set():
            self._leaving.append(sub.channel)
            if len(self._leaving) == 1:
                asyncio.get_running_loop().call_soon(self._flush_unsubscribes)

    def _flush_unsubscribes(self) -> None:
        channels, self._leaving = self._leaving, []
        if channels and self._writer is not None and self._connected.is_set():
            try:
                self._write(_command(b"UNSUBSCRIBE", channels))
            except (RedisError, OSError):
                pass  # the connection is gone; so are the subscriptions

    def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise RedisConnectionError("the pub/sub connection is closed")
        writer.write(data)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._connect()
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._connected.is_set():
                    log.error("pub/sub connection lost: %s", exc)
                self._connected.clear()
                self._fail_all()
                await self._close_connection()
                await asyncio.sleep(self._backoff.next())
                continue

    async def _connect(self) -> None:
        conn = self._conn = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()
        # redis-py opened (and authenticated) the connection; from here on the hub owns its socket:
        # replies go straight to _Reader.data_received, without a stream reader or a task switch.
        writer = stream_writer(conn)
        assert writer is not None
        self._writer = writer
        transport = self._writer.transport
        self._reader = _Reader(self, transport, asyncio.get_running_loop())
        transport.set_protocol(self._reader)
        self._write(_command(b"SUBSCRIBE", [names.HUB_CHANNEL.encode()]))

    async def _read_forever(self) -> None:
        assert self._reader is not None
        await self._reader.lost  # raises why the connection ended

    def _dispatch(self, replies: list[object]) -> None:
        subs = self._subs
        for reply in replies:
            if isinstance(reply, list) and len(reply) == 3:
                kind, channel, payload = reply
                if kind == _MESSAGE:
                    sub = subs.get(channel)
                    if sub is not None:
                        sub.put(payload)
                elif kind == _SUBSCRIBE:
                    if channel == self._hub_channel:
                        self._connected.set()
                        self._backoff.reset()
                        log.info("pub/sub connected")
                    waiter = self._confirm.get(channel)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                # unsubscribe confirmations need nothing: the channel left _subs already
            elif isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))

    def _fail_all(self) -> None:
        err = RedisUnavailable("The gateway lost its connection to Redis; the answer was interrupted.")
        for sub in self._subs.values():
            sub.put(err)
        self._subs.clear()
        for waiter in self._confirm.values():
            if not waiter.done():
                waiter.set_exception(err)

    async def _close_connection(self) -> None:
        self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._leaving.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.disconnect(nowait=True)
            except (RedisError, OSError):
                pass
