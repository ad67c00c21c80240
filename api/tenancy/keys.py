"""Team API keys, kept in Redis so every replica sees a new or revoked key on its next request.

A key is ``sk-`` and 48 URL-safe random characters (288 bits from :mod:`secrets`). Only its
SHA-256 is stored: a slow password hash (bcrypt, scrypt) protects *guessable* secrets, while a
288-bit random key cannot be guessed, so a fast hash is just as safe and keeps the lookup on
every request at one Redis round trip. The record lives under the hash
(``shared.names.key_by_hash``), so authenticating is one ``HGETALL``; an index by id serves
listing and revoking. There is no in-process cache: revoking deletes the record, and the next
request on any replica finds nothing.

The same functions serve the admin API (:mod:`api.tenancy.admin`) and the CLI (:mod:`api.tenancy.cli`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import names, redis_trouble
from shared.errors import InvalidRequest

log = logging.getLogger("api.keys")

KEY_PREFIX = "sk-"
_KEY_RE = re.compile(r"^sk-[A-Za-z0-9_-]{48}$")
_LIMITS = ("rpm", "max_concurrent", "daily_tokens")


def generate_secret() -> str:
    """A new key: ``sk-`` + 48 URL-safe characters (36 random bytes)."""
    return KEY_PREFIX + secrets.token_urlsafe(36)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a key (fast on purpose: the key is random, see the module docstring)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    """Whether ``token`` has the shape of a team key (anything else is refused without asking Redis)."""
    return bool(_KEY_RE.match(token))


@dataclass(frozen=True)
class KeyRecord:
    """A team key as stored (never with its secret). A limit of None means unlimited."""

    id: str
    name: str
    rpm: int | None
    max_concurrent: int | None
    daily_tokens: int | None
    created: int

    @property
    def limited(self) -> bool:
        return any(getattr(self, f) is not None for f in _LIMITS)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "rpm": self.rpm,
            "max_concurrent": self.max_concurrent,
            "daily_tokens": self.daily_tokens,
            "created": self.created,
        }

    @classmethod
    def from_redis(cls, data: dict[bytes, bytes]) -> KeyRecord:
        def limit(field: str) -> int | None:
            raw = data.get(field.encode(), b"")
            return int(raw) if raw else None

        return cls(
            id=data[b"id"].decode(),
            name=data[b"name"].decode(),
            rpm=limit("rpm"),
            max_concurrent=limit("max_concurrent"),
            daily_tokens=limit("daily_tokens"),
            created=int(data[b"created"]),
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling: the master key, a team key (``key`` set), or anyone (no master key configured).

    Put in ``scope["state"]["principal"]`` by :class:`api.http.middleware.AuthMiddleware`.
    """

    kind: Literal["master", "key", "open"]
    key: KeyRecord | None = None


MASTER = Principal("master")
OPEN = Principal("open")


class NewKey(BaseModel):
    """The body of ``POST /admin/keys`` (and the CLI's ``keys create`` options)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=200)
    rpm: StrictInt | None = Field(default=None, ge=1)
    max_concurrent: StrictInt | None = Field(default=None, ge=1)
    daily_tokens: StrictInt | None = Field(default=None, ge=1)


def parse_new_key(body: Any) -> NewKey:
    """Validate a new key's fields; 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        new = NewKey.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        msg = first.get("msg", "invalid value")
        if first.get("type") == "extra_forbidden":
            msg = f"unknown field; a key takes {', '.join(NewKey.model_fields)}"
        raise InvalidRequest(
            f"Invalid key{f' field {param!r}' if param else ''}: {msg}.", param=param, code="invalid_value"
        ) from None
    if not new.name.strip():
        raise InvalidRequest("Invalid key field 'name': must not be blank.", param="name", code="invalid_value")
    return new


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """Turn a lost Redis into a 503 (never a 500)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise redis_trouble.unavailable(exc) from exc


class KeyStore:
    """The team keys in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, new: NewKey) -> tuple[KeyRecord, str]:
        """Store a new key; returns its record and its secret (shown once, never stored)."""
        secret = generate_secret()
        key_hash = hash_secret(secret)
        record = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=new.name,
            rpm=new.rpm,
            max_concurrent=new.max_concurrent,
            daily_tokens=new.daily_tokens,
            created=int(time.time()),
        )
        fields = {
            "id": record.id,
            "name": record.name,
            "created": record.created,
            "hash": key_hash,
            **{f: "" if getattr(record, f) is None else getattr(record, f) for f in _LIMITS},
        }
        async with redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(names.key_by_hash(key_hash), mapping=fields)
                pipe.set(names.key_by_id(record.id), key_hash)
                pipe.sadd(names.KEY_IDS, record.id)
                await pipe.execute()
        log.info("key %s (%s) created", record.id, record.name)
        return record, secret

    async def authenticate(self, secret: str) -> KeyRecord | None:
        """The key whose secret this is, or None; one round trip, no cache (revocation is immediate)."""
        if not looks_like_key(secret):
            return None
        key_hash = hash_secret(secret)
        async with redis_errors():
            data = await self._redis.hgetall(names.key_by_hash(key_hash))  # type: ignore[misc]
        # The lookup is by hash already; comparing the stored hash in constant time costs nothing.
        if not data or not hmac.compare_digest(data.get(b"hash", b""), key_hash.encode()):
            return None
        return KeyRecord.from_redis(data)

    async def list_all(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        async with redis_errors():
            ids = sorted(m.decode() for m in await self._redis.smembers(names.KEY_IDS))  # type: ignore[misc]
            if not ids:
                return []
            hashes = await self._redis.mget([names.key_by_id(i) for i in ids])
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_hash in hashes:
                    if key_hash is not None:
                        pipe.hgetall(names.key_by_hash(key_hash.decode()))
                rows = await pipe.execute()
        records = [KeyRecord.from_redis(row) for row in rows if row]
        return sorted(records, key=lambda r: (r.created, r.id))

    async def revoke(self, key_id: str) -> bool:
        """Delete a key; False if there is no such key. Effective on every replica's next request."""
        async with redis_errors():
            key_hash = await self._redis.get(names.key_by_id(key_id))
            if key_hash is None:
                return False
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(names.key_by_hash(key_hash.decode()))
                pipe.delete(names.key_by_id(key_id))
                pipe.srem(names.KEY_IDS, key_id)
                pipe.hdel(names.FQ_WEIGHTS, key_id)  # its share of the fair queue goes with it
                pipe.hdel(names.FQ_FINISH, key_id)
                deleted, *_ = await pipe.execute()
        if deleted:
            log.info("key %s revoked", key_id)
        return bool(deleted)
