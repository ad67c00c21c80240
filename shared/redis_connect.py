"""Every Redis client of the gateway is built here: a plain URL, or the primary that Sentinel names.

With ``REDIS_SENTINELS`` empty, a client connects to ``REDIS_URL``. With it set (a list of
``host:port``), every client — the API's commands and its pub/sub hub, the workers' arq pool
(claim, publish, wake-ups), the CLI, the doctor, the health checks — asks the sentinels for the
current primary of ``REDIS_SENTINEL_MASTER`` and connects there; ``REDIS_URL`` then only gives
the database number, user name and password (its host is not used). redis-py's
``SentinelConnectionPool`` asks again on every new connection and drops a connection that finds
a replica where the primary was (``READONLY``), so a failover costs the requests that were on
the old primary's connections an error, and the next ones go to the new primary without a
restart. arq's ``RedisSettings`` carries the same sentinel list natively.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.sentinel import Sentinel as SyncSentinel

from shared.errors import ConfigError
from shared.settings import Settings


def sentinel_hosts(raw: str) -> list[tuple[str, int]]:
    """``REDIS_SENTINELS`` parsed: ``host:port`` items separated by commas; ConfigError if malformed."""
    hosts: list[tuple[str, int]] = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")  # [::1]:26379
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS: {item!r} is not host:port (e.g. sentinel-0:26379)")
        hosts.append((host, int(port)))
    return hosts


def _url_parts(url: str) -> dict[str, Any]:
    """What a sentinel-managed connection takes from ``REDIS_URL``: database, user, password, TLS."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/")
    out: dict[str, Any] = {"db": int(db) if db.isdigit() else 0}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        out["ssl"] = True
    return out


def _sentinel_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    # The sentinels are asked with the same time limits as the data commands, so a dead sentinel
    # costs one connect timeout before the next is tried, never a hang.
    return {k: v for k, v in options.items() if k.startswith("socket_")}


def async_redis(settings: Settings, **options: Any) -> Redis:
    """An asyncio client of the primary (``options``: redis-py's, e.g. ``socket_timeout``)."""
    hosts = sentinel_hosts(settings.redis_sentinels)
    if not hosts:
        return cast(Redis, Redis.from_url(settings.redis_url, **options))
    sentinel = Sentinel(hosts, sentinel_kwargs=_sentinel_kwargs(options), **options)  # type: ignore[no-untyped-call]
    return cast(Redis, sentinel.master_for(settings.redis_sentinel_master, **_url_parts(settings.redis_url)))


def sync_redis(settings: Settings, **options: Any) -> redis.Redis:
    """A synchronous client of the primary (the doctor's CLI)."""
    hosts = sentinel_hosts(settings.redis_sentinels)
    if not hosts:
        return redis.Redis.from_url(settings.redis_url, **options)
    sentinel = SyncSentinel(hosts, sentinel_kwargs=_sentinel_kwargs(options), **options)  # type: ignore[no-untyped-call]
    master = sentinel.master_for(settings.redis_sentinel_master, **_url_parts(settings.redis_url))  # type: ignore[no-untyped-call]
    return cast(redis.Redis, master)


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings for the workers: the URL, or the sentinels (arq supports them natively)."""
    plain = RedisSettings.from_dsn(settings.redis_url)
    hosts = sentinel_hosts(settings.redis_sentinels)
    if hosts:
        plain.host = hosts
        plain.sentinel = True
        plain.sentinel_master = settings.redis_sentinel_master
    return plain
