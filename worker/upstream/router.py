"""Which upstreams a job goes to, in which order: its route's targets, from the live configuration.

The worker keeps one :class:`Router`: the live routing configuration (:mod:`shared.liveconfig`),
the circuit breakers (:mod:`shared.breaker`) and one client per upstream, built when a route
first needs it and rebuilt when its configuration changes. A job names its route by its model
id; a route unknown here (a change not seen yet) falls back to the built-in decopy upstream with
the job's own upstream model, which is what the API resolved.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.breaker import Breakers
from shared.liveconfig import LiveConfig
from shared.messages import ChatJob
from shared.routing import BUILTIN, UpstreamConfig
from shared.settings import Settings
from worker.upstream.base import Upstream

log = logging.getLogger("worker.router")


@dataclass(frozen=True)
class Choice:
    """One target of a job: its label (``upstream/model``), its client, the job as it sends it."""

    label: str
    upstream: Upstream
    job: ChatJob
    #: The upstream takes tools natively: the answer's tool calls need no reading out of its text.
    native_tools: bool = False


def decopy_upstream(settings: Settings) -> Upstream:
    """The decopy client ``DECOPY_TRANSPORT`` names (curl_cffi is imported only when chosen)."""
    if settings.decopy_transport == "curl_cffi":
        from worker.upstream.decopy.curl_transport import CurlDecopyUpstream

        return CurlDecopyUpstream(settings)
    from worker.upstream.decopy.client import DecopyUpstream

    return DecopyUpstream(settings)


def _build(config: UpstreamConfig, settings: Settings) -> Upstream:
    if config.kind == "openai":
        from worker.upstream.openai_compat import OpenAIUpstream

        return OpenAIUpstream(config, settings)
    upstream = decopy_upstream(dataclasses.replace(settings, decopy_base_url=config.base_url))
    upstream.name = config.name
    return upstream


class Router:
    def __init__(self, settings: Settings, redis: Redis, default: Upstream) -> None:
        self.settings = settings
        self.default = default
        self.live = LiveConfig(redis, settings)
        self.breakers = Breakers(
            redis,
            threshold=settings.breaker_failures,
            cooldown=settings.breaker_cooldown,
            interval=settings.config_poll_interval,
            targets=lambda: self.live.current.labels(),
        )
        self._clients: dict[str, tuple[UpstreamConfig, Upstream]] = {}
        self._retired: list[Upstream] = []

    async def start(self) -> None:
        await self.live.start()
        await self.breakers.start()

    async def aclose(self) -> None:
        await self.breakers.stop()
        await self.live.stop()
        for _, client in self._clients.values():
            await client.aclose()
        for client in self._retired:
            await client.aclose()
        self._clients.clear()
        self._retired.clear()

    def _client(self, name: str) -> tuple[UpstreamConfig, Upstream] | None:
        config = self.live.current.upstreams.get(name)
        if config is None:
            return None
        if config.builtin:
            return config, self.default
        held = self._clients.get(name)
        if held is not None and held[0] == config:
            return held
        if held is not None:
            self._retired.append(held[1])  # answers in flight still use it; closed at shutdown
        held = (config, _build(config, self.settings))
        self._clients[name] = held
        return held

    async def choices(self, job: ChatJob) -> list[Choice]:
        """The job's targets in order (never empty)."""
        route = self.live.current.route(job["model"])
        if route is None:
            # A route the API knew and this worker not yet (a change less than a poll old): read now.
            try:
                await self.live.refresh()
            except (RedisError, OSError, ValueError) as exc:
                log.warning("routing configuration not readable (%s); the job goes to decopy", exc)
            route = self.live.current.route(job["model"])
        out: list[Choice] = []
        if route is not None:
            for target in route.targets:
                held = self._client(target.upstream)
                if held is None:
                    continue  # refused by the admin API; only a change in flight can show it
                config, client = held
                sent = job if target.model == job["upstream_model"] else {**job, "upstream_model": target.model}
                out.append(Choice(target.label, client, sent, config.native_tools))
        if not out:
            out.append(Choice(f"{BUILTIN}/{job['upstream_model']}", self.default, job))
        return out
