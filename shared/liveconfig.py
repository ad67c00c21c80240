"""The live routing configuration in Redis: read by every API replica and worker, changed by the admin API.

Two keys (``shared.names``): ``CONFIG`` holds the stored upstreams and routes as JSON with its
version; ``CONFIG_VERSION`` holds the version alone. Every process polls the version key (one
GET every ``CONFIG_POLL_INTERVAL``, 0.5 s by default) and reloads the JSON only when it moved,
so a change reaches every replica and worker within about a second without a restart and
without a pub/sub connection to keep alive. A change is one optimistic transaction (WATCH):
read, change, validate, write both keys with the version raised by one.

The first process to start with an empty Redis seeds it from ``UPSTREAMS`` and ``ROUTES``; after
that Redis is the source of truth (the environment only seeds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from shared import names
from shared.routing import RoutingConfig, Stored, check, combine, seed_from_settings
from shared.settings import Settings
from shared.tasks import stop_task

log = logging.getLogger("shared.liveconfig")

# KEYS: config, version. ARGV: the seed JSON. Writes the seed as version 1 unless a config exists.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1')
return 1
"""


def _encode(stored: Stored, version: int) -> bytes:
    return orjson.dumps({"version": version, **stored.to_json()})


def _decode(raw: bytes | None) -> tuple[Stored, int]:
    if raw is None:
        return Stored(), 0
    data = orjson.loads(raw)
    return Stored.from_json(data), int(data.get("version", 0))


class LiveConfig:
    """This process's copy of the routing configuration, kept current by polling Redis."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._seed = seed_from_settings(settings.upstreams, settings.routes, settings.decopy_models)
        self.current: RoutingConfig = self._combine(self._seed, 0)
        self._listeners: list[Callable[[RoutingConfig], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._seed_script = redis.register_script(_SEED)

    def _combine(self, stored: Stored, version: int) -> RoutingConfig:
        s = self._settings
        return combine(stored, version=version, decopy_base_url=s.decopy_base_url, decopy_models=s.decopy_models)

    def on_change(self, listener: Callable[[RoutingConfig], None]) -> None:
        self._listeners.append(listener)
        listener(self.current)

    async def start(self) -> None:
        """Seed Redis if it holds nothing yet, load, then keep polling (Redis down: retried)."""
        try:
            await self._seed_script(keys=[names.CONFIG, names.CONFIG_VERSION], args=[_encode(self._seed, 1)])
            await self.refresh()
        except (RedisError, OSError) as exc:
            log.warning("routing configuration not loaded yet (%s); using the environment's until Redis answers", exc)
        except ValueError as exc:  # what Redis holds does not parse (written by another version?)
            log.error("routing configuration in Redis refused (%s); using the environment's", exc)
        self._task = asyncio.create_task(self._poll(), name="liveconfig-poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def refresh(self) -> bool:
        """Reload if the version in Redis moved; True when the configuration changed."""
        raw_version = await self._redis.get(names.CONFIG_VERSION)
        version = int(raw_version or 0)
        if version == self.current.version:
            return False
        stored, version = _decode(await self._redis.get(names.CONFIG))
        self._apply(self._combine(stored, version))
        return True

    def _apply(self, config: RoutingConfig) -> None:
        self.current = config
        log.info(
            "routing configuration version %d: %d routes, %d upstreams",
            config.version,
            len(config.routes),
            len(config.upstreams),
        )
        for listener in self._listeners:
            try:
                listener(config)
            except Exception:  # one broken listener must not stop the others
                log.exception("routing configuration listener failed")

    async def _poll(self) -> None:
        interval = self._settings.config_poll_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.debug("routing configuration poll failed: %s", exc)
            except ValueError as exc:
                log.error("routing configuration in Redis refused (%s); keeping version %d", exc, self.current.version)

    async def change(self, mutate: Callable[[Stored], Stored]) -> RoutingConfig:
        """Apply ``mutate`` to the stored configuration atomically; raises RouteConfigError if invalid."""
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(names.CONFIG)
                    stored, version = _decode(await pipe.get(names.CONFIG))
                    new = mutate(stored)
                    check(new, self._settings.decopy_models)
                    version += 1
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(names.CONFIG, _encode(new, version))
                    pipe.set(names.CONFIG_VERSION, str(version))
                    await pipe.execute()
                except WatchError:
                    continue  # another replica changed it meanwhile: read again
            config = self._combine(new, version)
            self._apply(config)
            return config

    async def stored(self) -> Stored:
        stored, _ = _decode(await self._redis.get(names.CONFIG))
        return stored
