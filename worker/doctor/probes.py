"""The doctor's network checks, before any HTTP: resolve, reach (and CONNECT through a proxy), TLS.

They run on the event loop with asyncio's own sockets: the name lookup through the loop's
resolver, the connection and a proxy's ``CONNECT`` through a stream, and the TLS handshake as
an upgrade of that same stream (``StreamWriter.start_tls``), each bounded by
``UPSTREAM_CONNECT_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import socket
import ssl
import time
import urllib.parse

import certifi

from shared.errors import ConfigError
from shared.settings import mask_url
from worker.doctor.report import Step, ms_since
from worker.doctor.steps import Steps
from worker.upstream.base import trim


@dataclasses.dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str, what: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if not parts.scheme or not parts.hostname:
            raise ConfigError(f"{what} {url!r} is not a URL")
        default = {"https": 443, "http": 80, "socks5": 1080, "socks5h": 1080, "socks4": 1080}.get(parts.scheme, 80)
        return cls(parts.scheme, parts.hostname, parts.port or default)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass
class Route:
    """The way out: directly to the upstream, or through one proxy."""

    proxy_url: str | None
    proxy: Endpoint | None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    @property
    def label(self) -> str:
        return f"via proxy {mask_url(self.proxy_url)}" if self.proxy_url else "direct"


def _describe(exc: OSError) -> str:
    """An OSError as the socket module words it (asyncio's connect errors say only "Connect call
    failed"): ``[Errno 111] Connection refused``."""
    if exc.errno is not None:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc)


class NetworkProbes(Steps):
    """Resolve, reach and TLS, for every route (direct, or each proxy)."""

    target: Endpoint
    routes: list[Route]
    _timeout: float

    async def _getaddrinfo(self, endpoint: Endpoint) -> list[str]:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM), self._timeout
        )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def _resolve(self) -> None:
        started = time.monotonic()
        targets = [r.proxy for r in self.routes if r.proxy is not None] or [self.target]
        found: list[str] = []
        for endpoint in targets:
            try:
                addresses = await self._getaddrinfo(endpoint)
            except TimeoutError:
                self._fail(
                    Step(
                        "resolve",
                        "fail",
                        f"cannot resolve {endpoint.host!r}: no answer within {self._timeout:g}s",
                        ms_since(started),
                        kind="connection",
                    )
                )
            except OSError as exc:
                self._fail(
                    Step(
                        "resolve",
                        "fail",
                        f"cannot resolve {endpoint.host!r}: {exc}",
                        ms_since(started),
                        kind="connection",
                    )
                )
            shown = ", ".join(addresses[:3]) + (f" (+{len(addresses) - 3})" if len(addresses) > 3 else "")
            found.append(f"{endpoint.host} → {shown}")
        note = "; the proxy resolves the upstream's name" if self.routes[0].proxy else ""
        self._add(Step("resolve", "ok", "; ".join(found) + note, ms_since(started)))

    async def _reach(self) -> None:
        started = time.monotonic()
        verdicts: list[str] = []
        for route in self.routes:
            first_hop = route.proxy or self.target
            try:
                route.reader, route.writer = await asyncio.wait_for(
                    asyncio.open_connection(first_hop.host, first_hop.port), self._timeout
                )
            except OSError as exc:
                what = f"proxy {mask_url(route.proxy_url)}" if route.proxy_url else f"{self.target}"
                shown = _describe(exc) or f"no connection within {self._timeout:g}s"
                self._fail(
                    Step(
                        "reach",
                        "fail",
                        f"cannot connect to {what}: {shown}",
                        ms_since(started),
                        kind="timeout" if isinstance(exc, TimeoutError) else "connection",
                    )
                )
            if route.proxy is None:
                verdicts.append(f"TCP connection to {self.target} (direct)")
            elif route.proxy.scheme.startswith("socks"):
                verdicts.append(
                    f"TCP connection to SOCKS proxy {route.proxy} (the tunnel itself is tried by the create-job call)"
                )
            elif self.target.scheme == "https":
                await self._connect_tunnel(route, started)
                verdicts.append(f"CONNECT tunnel to {self.target} through proxy {route.proxy}")
            else:
                verdicts.append(f"TCP connection to proxy {route.proxy} (an http:// upstream needs no tunnel)")
        self._add(Step("reach", "ok", "; ".join(verdicts), ms_since(started)))

    async def _connect_tunnel(self, route: Route, started: float) -> None:
        assert route.reader is not None and route.writer is not None and route.proxy_url is not None
        parts = urllib.parse.urlsplit(route.proxy_url)
        lines = [f"CONNECT {self.target} HTTP/1.1", f"Host: {self.target}"]
        if parts.username is not None:
            creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(creds.encode()).decode())
        try:
            route.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            try:
                head = await asyncio.wait_for(route.reader.readuntil(b"\r\n\r\n"), self._timeout)
            except asyncio.IncompleteReadError as exc:  # the proxy closed first
                head = exc.partial
            except asyncio.LimitOverrunError:  # no end of head in 64 KiB
                head = await route.reader.read(65536)
        except OSError as exc:
            self._fail(
                Step(
                    "reach",
                    "fail",
                    f"proxy {mask_url(route.proxy_url)} broke the CONNECT: {exc or 'no answer in time'}",
                    ms_since(started),
                    kind="connection",
                )
            )
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        code = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        if code != 200:
            self._fail(
                Step(
                    "reach",
                    "fail",
                    f"proxy {mask_url(route.proxy_url)} refused the tunnel to "
                    f"{self.target}: {status_line or 'no answer'}",
                    ms_since(started),
                    http_status=code,
                    body=trim(head.decode("latin-1")),
                    kind="connection",
                )
            )

    async def _tls(self) -> None:
        if self.target.scheme != "https":
            self._add(Step("tls", "skip", f"{self.target.scheme}:// upstream: no TLS to check"))
            return
        started = time.monotonic()
        # The trust store requests uses (REQUESTS_CA_BUNDLE, else certifi's bundle).
        cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        context = ssl.create_default_context(cafile=cafile)
        verdicts: list[str] = []
        for route in self.routes:
            if route.proxy is not None and route.proxy.scheme.startswith("socks"):
                verdicts.append(f"{route.label}: checked by the create-job call")
                continue
            assert route.writer is not None
            try:
                await asyncio.wait_for(route.writer.start_tls(context, server_hostname=self.target.host), self._timeout)
            except ssl.SSLCertVerificationError as exc:
                self._fail(
                    Step(
                        "tls",
                        "fail",
                        f"certificate of {self.target.host} not trusted ({route.label}): {exc.verify_message}",
                        ms_since(started),
                        kind="connection",
                    )
                )
            except (ssl.SSLError, OSError) as exc:
                self._fail(
                    Step(
                        "tls",
                        "fail",
                        f"TLS handshake with {self.target.host} failed ({route.label}): {exc or 'no answer in time'}",
                        ms_since(started),
                        kind="connection",
                    )
                )
            tls: ssl.SSLObject = route.writer.get_extra_info("ssl_object")
            cert = tls.getpeercert() or {}
            # issuer: a tuple of RDNs, each a tuple of (name, value) pairs (ssl.getpeercert's shape)
            names_ = {str(pair[0]): str(pair[1]) for rdn in cert.get("issuer", ()) for pair in rdn}
            issuer = names_.get("organizationName") or names_.get("commonName") or "?"
            verdicts.append(
                f"{tls.version()}, certificate for {self.target.host} by {issuer}, valid until "
                f"{cert.get('notAfter', '?')} ({route.label})"
            )
        self._add(Step("tls", "ok", "; ".join(verdicts), ms_since(started)))

    async def _close_connections(self) -> None:
        for route in self.routes:
            writer, route.writer, route.reader = route.writer, None, None
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1)
