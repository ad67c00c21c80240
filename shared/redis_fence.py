"""The fence around redis-py's private parts (see :mod:`shared.fence`): one, the socket's writer.

Two pieces drive a redis-py connection themselves, after redis-py has opened it (address, TLS,
AUTH, SELECT, client name: everything in ``REDIS_URL``): the API's pub/sub hub
(:mod:`api.relay.hub`) takes over the socket with a protocol of its own, and the worker's
publisher (:mod:`worker.jobs.publish`) pipelines commands without waiting for their replies.
Both need the connection's ``asyncio.StreamWriter``, which redis-py keeps private.
"""

from __future__ import annotations

import asyncio

from redis.asyncio.connection import AbstractConnection

from shared.fence import PrivateUse

PRIVATE_USES = (
    PrivateUse(
        "redis",
        "redis.asyncio.connection:AbstractConnection()._writer",
        "the hub and the publisher write to (and the hub takes over) the socket redis-py opened; no public handle",
    ),
)


def stream_writer(conn: AbstractConnection) -> asyncio.StreamWriter | None:
    """The open connection's writer (None once it is closed)."""
    return conn._writer
