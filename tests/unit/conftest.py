"""The unit tests' one fixture: a private Redis, started once per session and emptied per test.

Everything else runs in the test's own process (no API, no workers): the relay pieces, the
queue scripts and the fences against this Redis; the parsers, shaper and encoders on their own.
``make test-fast`` runs this folder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis

from devtools.procs import Stack

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async test body on a fresh event loop."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def unit_redis_url() -> Iterator[str]:
    stack = Stack()
    try:
        _, url = stack.redis()
        yield url
    finally:
        stack.stop()


@pytest.fixture
def redis_url(unit_redis_url: str) -> str:
    """The session's Redis, empty."""
    client = redis.Redis.from_url(unit_redis_url)
    try:
        client.flushall()
    finally:
        client.close()
    return unit_redis_url
