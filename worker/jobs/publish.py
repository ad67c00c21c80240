"""One pipelined Redis connection per worker process for the jobs' messages.

A job publishes ~32 messages (start, the pieces, done). redis-py's asyncio client sends each
command and waits for its reply before the caller goes on: one round trip per message and, on
this machine, ~100 µs of CPU per ``PUBLISH`` awaited one by one (47 µs of which is the client's
own command/reply path). Here a message goes out without the job waiting for it: one reader
task takes the replies in order and hands each to its :class:`Reply`. A job
looks at its previous reply before the next message (0 receivers: its client's API stopped
listening) and waits only for its terminal message. Measured on this machine (uvloop, local
Redis): 8.6 µs of CPU per message when several are in flight, 47 µs when each is waited for.

No library does this for redis-py's asyncio client (its ``Pipeline`` also waits, for the
whole batch), so it is written here, on the socket's writer (:mod:`shared.redis_fence`);
redis-py still does everything else: connecting (URL, AUTH, SELECT, TLS, RESP), packing
commands and parsing replies (hiredis).

Commands sent in the same turn of the event loop leave in one write (one system call): on this
2-core VM a ``send()`` to a Redis that sleeps costs more than all the Python around it (py-spy:
a fifth of the worker's CPU was in socket writes), and a first piece goes with its ``SET``, and
pieces of several jobs that arrived together go together. Nothing waits for more: the write is
made at the end of the current turn.

Order: every message of the process goes through this one connection in the order ``send``
was called, so a job's messages reach Redis in ``seq`` order. If the connection fails, every
reply not yet read fails with the error, and the next ``send`` connects again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from shared.redis_fence import stream_writer

log = logging.getLogger("worker.publish")

#: Bytes waiting in the socket's buffer above which a sender waits for Redis to read them.
WRITE_BUFFER_LIMIT = 1 << 20


class Reply:
    """The reply to one command sent through :class:`PipelinedConnection`, once it is read."""

    __slots__ = ("value", "error", "sent_at", "_waiter")

    def __init__(self, sent_at: float) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.sent_at = sent_at
        self._waiter: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.value is not None or self.error is not None

    def result(self) -> Any:
        """The reply's value; raises the error that took its place."""
        if self.error is not None:
            raise self.error
        return self.value

    async def wait(self) -> Any:
        if not self.done:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self.result()

    def _set(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error = value, error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class PipelinedConnection:
    """Commands written without waiting; replies read by one task, in order (see the module doc)."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        # No socket timeout: writes then skip redis-py's wait_for (a task per command), and the
        # reader waits for replies however long the connection is idle. A hung Redis is found by
        # :meth:`stalled` instead (replies overdue).
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._connection_class = pool.connection_class
        self._conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: collections.deque[Reply] = collections.deque()
        self._connecting: asyncio.Lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: list[bytes] = []  # packed commands of this turn of the loop, written at its end
        self._flush_scheduled = False

    async def send(self, *args: Any) -> Reply:
        """Write one command now; its :class:`Reply` fills in when Redis answers."""
        conn = self._conn
        if conn is None or self._connecting.locked():
            conn = await self._connect()
        loop = self._loop
        assert loop is not None
        reply = Reply(loop.time())
        self._pending.append(reply)
        self._out += conn.pack_command(*args)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        writer = stream_writer(conn)
        if writer is not None and writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            await writer.drain()  # Redis reads slower than we write: wait, as redis-py would
        return reply

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        conn = self._conn
        writer = stream_writer(conn) if conn is not None else None
        if conn is None or writer is None or not out:
            return  # it broke meanwhile: these commands' replies have failed already (see _broken)
        try:
            writer.writelines(out)  # one system call for all of them
        except (RedisError, OSError, RuntimeError) as exc:
            self._broken(conn, exc)

    def stalled(self, timeout: float) -> bool:
        """True, and the connection dropped, if the oldest unanswered command waited ``timeout`` s."""
        if not self._pending or self._conn is None or self._loop is None:
            return False
        if self._loop.time() - self._pending[0].sent_at < timeout:
            return False
        log.error("Redis has not answered for %.1fs; publish connection dropped", timeout)
        self._broken(self._conn, RedisConnectionError(f"Redis did not answer within {timeout:g}s"))
        return True

    async def _connect(self) -> AbstractConnection:
        async with self._connecting:
            if self._conn is not None:
                return self._conn
            self._loop = asyncio.get_running_loop()
            conn = self._connection_class(**self._kwargs)
            await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            self._conn = conn
            self._reader = asyncio.create_task(self._read(conn), name="publish-replies")
            return conn

    async def _read(self, conn: AbstractConnection) -> None:
        pending = self._pending
        while True:
            try:
                value = await conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:  # an error reply: that command failed, the connection is fine
                if pending:
                    pending.popleft()._set(None, exc)
                continue
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._broken(conn, exc)
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self._broken(conn, RedisConnectionError("unexpected reply on the publish connection"))
                return
            pending.popleft()._set(value, None)

    def _broken(self, conn: AbstractConnection, exc: BaseException) -> None:
        if self._conn is not conn:
            return
        self._conn = None
        self._out.clear()
        error = exc if isinstance(exc, RedisError) else RedisConnectionError(f"{type(exc).__name__}: {exc}")
        pending, self._pending = self._pending, collections.deque()
        for reply in pending:
            reply._set(None, error)
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        asyncio.ensure_future(conn.disconnect(nowait=True))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if conn is not None:
            await conn.disconnect(nowait=True)
        for reply in self._pending:
            reply._set(None, RedisConnectionError("publish connection closed"))
        self._pending.clear()
