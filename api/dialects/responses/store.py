"""Stored responses: what ``GET /v1/responses/{id}``, ``input_items`` and ``previous_response_id`` read.

One Redis string per response (``shared.names.stored_response``), JSON, written once with
``RESPONSES_TTL_SECONDS`` as its expiry: the finished ``response`` object, this request's input
items, the conversation's turns up to and including the answer (for a continuation), and its
owner. The owner is the team key's *id* (``key:<id>``), or ``master`` / ``open``: never a
secret. Another owner's response, an expired one and a deleted one are all the same 404, so an
id says nothing about responses that are not the caller's.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from redis.asyncio import Redis

from api.tenancy.keys import Principal, redis_errors
from shared import names
from shared.errors import NotFound

log = logging.getLogger("api.responses")


def owner_of(principal: Principal | None) -> str:
    """Who owns what a request stores: a team key by its id, else the master key or open mode."""
    if principal is None:
        return "open"
    if principal.key is not None:
        return "key:" + principal.key.id
    return principal.kind


def not_found(response_id: str, param: str) -> NotFound:
    return NotFound(f"No response with id '{response_id}' (it may have expired).", param=param)


class ResponseStore:
    """The stored responses in Redis; one per API process, kept in ``app.state``."""

    def __init__(self, redis: Redis, *, ttl_s: float) -> None:
        self._redis = redis
        self.ttl_ms = int(ttl_s * 1000)

    async def save(self, record: dict[str, Any]) -> None:
        """Keep ``record`` (with ``owner`` and ``response``) for the TTL; a lost Redis costs only the record."""
        try:
            async with redis_errors():
                await self._redis.set(
                    names.stored_response(record["response"]["id"]), orjson.dumps(record), px=self.ttl_ms
                )
        except Exception as exc:  # the answer itself went out: log, never fail it
            log.warning("response %s not stored: %r", record["response"]["id"], exc)

    async def load(self, response_id: str, owner: str, *, param: str = "response_id") -> dict[str, Any]:
        """The record of one of ``owner``'s responses; 404 (naming ``param``) for any other id."""
        async with redis_errors():
            raw = await self._redis.get(names.stored_response(response_id))
        record = orjson.loads(raw) if raw is not None else None
        if not isinstance(record, dict) or record.get("owner") != owner:
            raise not_found(response_id, param)
        return record

    async def delete(self, response_id: str, owner: str) -> None:
        """Delete one of ``owner``'s responses; 404 for any other id."""
        await self.load(response_id, owner)
        async with redis_errors():
            await self._redis.delete(names.stored_response(response_id))
