"""One doctor run: the network checks, then the protocol checks, in order, into one report.

The first failure stops the network steps (the later ones are reported as not run); each model
is checked even if another model failed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from shared.settings import Settings, mask_url, proxy_urls
from worker.doctor.probes import Endpoint, NetworkProbes, Route
from worker.doctor.protocol import ProtocolProbes
from worker.doctor.report import Report, Step, Stop
from worker.upstream.decopy.client import DecopyUpstream


class Doctor(NetworkProbes, ProtocolProbes):
    """One doctor run against the upstream ``settings`` describe."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = "cli",
        host: str | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        self.settings = settings
        self.target = Endpoint.parse(settings.decopy_base_url, "DECOPY_BASE_URL")
        proxies = proxy_urls(settings.decopy_proxy)
        self.routes = [Route(p, Endpoint.parse(p, "DECOPY_PROXY")) for p in proxies] or [Route(None, None)]
        self.report = Report(
            base_url=settings.decopy_base_url,
            proxies=[mask_url(p) for p in proxies],
            models=dict(settings.decopy_models),
            source=source,
            host=host or socket.gethostname(),
            started=time.time(),
        )
        self._on_step = on_step or (lambda step: None)
        self._timeout = settings.upstream_connect_timeout

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> Report:
        upstream = DecopyUpstream(self.settings)
        network_steps = ["resolve", "reach", "tls", "cloudflare", "create-job", "stream"]
        try:
            try:
                await self._resolve()
                await self._reach()
                await self._tls()
                await self._close_connections()
                first_model = await self._create_and_stream(upstream)
                await self._models(upstream, first_model)
            except Stop:
                done = {s.step for s in self.report.steps}
                failed = self.report.failed
                for name in network_steps + [f"model {m}" for m in self.settings.decopy_models]:
                    if name not in done:
                        self._add(Step(name, "skip", f"not run: {failed.step if failed else 'an earlier step'} failed"))
        finally:
            await self._close_connections()
            await upstream.aclose()
            self.report.finished = time.time()
        return self.report
