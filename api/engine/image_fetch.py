"""Fetch an ``http(s)`` image URL from a chat message without opening a way into our own network.

A shared gateway that fetches any URL a client names is a server-side request forgery tool: a
client could make it read ``http://169.254.169.254/`` (cloud metadata), ``http://127.0.0.1:6379``
or anything else on the private network, and learn from the answer or the timing. So:

- only ``http`` and ``https``, on every hop;
- the host is resolved here, and the URL is refused when *any* address it resolves to is
  loopback, private, link-local, multicast, reserved, unspecified, shared (100.64/10) or
  otherwise not global — IPv4 and IPv6, including IPv4 addresses embedded in IPv6 ones
  (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64);
- the connection goes to the address that was checked (the URL's host is replaced by it; the
  ``Host`` header and, for https, the TLS server name and certificate check keep the real name),
  so no second DNS lookup can be rebound to an inner address;
- redirects are followed by hand, each hop checked the same way, at most
  :data:`MAX_REDIRECTS`;
- environment proxies are ignored (``trust_env=False``): the checked address is the one dialled;
- the body is read as a stream and abandoned past ``IMAGE_MAX_BYTES``; the whole fetch, DNS and
  redirects included, must finish within ``IMAGE_FETCH_TIMEOUT``;
- the type is decided by the bytes (:func:`api.engine.images.sniff`), never by ``Content-Type``.

``IMAGE_FETCH_ALLOW_NETWORKS`` exempts chosen networks from the address check (the tests serve
images from 127.0.0.2); it is empty by default. Every refusal is a 400 naming the image's field.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Sequence

import httpx

from api.engine.images import to_image
from shared.errors import InvalidRequest
from shared.messages import Image
from shared.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why the gateway must not connect to ``ip`` (None: it may)."""
    embedded = _embedded_ipv4(ip)
    if embedded is None:
        candidates: list[IPAddress] = [ip]
    elif isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates = [embedded]  # a socket dials ::ffff:a.b.c.d as plain a.b.c.d: judge that
    else:
        candidates = [embedded, ip]  # 6to4, Teredo, NAT64: both the relay's and the inner address
    if any(c in net for c in candidates for net in allow):
        return None
    for c in candidates:
        for flag, what in (
            ("is_loopback", "loopback"),
            ("is_link_local", "link-local"),
            ("is_multicast", "multicast"),
            ("is_unspecified", "unspecified"),
            ("is_reserved", "reserved"),
            ("is_private", "private"),
        ):
            if getattr(c, flag):
                return what
        if not c.is_global:
            return "not public"
    return None


class ImageFetcher:
    """Fetches image URLs for chat requests (one per API process, in ``app.state.images``)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        allow_networks: Sequence[IPNetwork] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the context that verifies https servers (default: the system's CAs)."""
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.allow = tuple(allow_networks)
        # Built once: loading the CA bundle for each fetch would cost more than the fetch.
        self._tls = tls or ssl.create_default_context()

    async def fetch(self, url: str, *, param: str) -> Image:
        """The image at ``url``; a 400 :class:`InvalidRequest` for anything else."""
        try:
            async with asyncio.timeout(self.timeout):
                async with httpx.AsyncClient(
                    trust_env=False, follow_redirects=False, verify=self._tls, timeout=self.timeout
                ) as client:
                    return await self._follow(client, url, param)
        except TimeoutError:
            raise InvalidRequest(
                f"The image URL did not answer within {self.timeout:g} s.", param=param, code="image_fetch_timeout"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, UnicodeError) as exc:
            # InvalidURL and ValueError: what the image server sent could not be read as a URL
            # (a redirect's Location such as "http://[::1"): its fault, the client's 400.
            raise InvalidRequest(
                f"The image URL could not be fetched: {type(exc).__name__}.", param=param, code="image_fetch_failed"
            ) from None

    async def _follow(self, client: httpx.AsyncClient, url: str, param: str) -> Image:
        current = self._parse(url, param)
        for _ in range(MAX_REDIRECTS + 1):
            host = current.raw_host.decode("ascii")
            port = current.port or (443 if current.scheme == "https" else 80)
            ip = await self._checked_address(host, port, param)
            extensions = {"sni_hostname": host} if current.scheme == "https" else {}
            headers = {
                "Host": current.netloc.decode("ascii"),
                "Accept": "image/*",
                "User-Agent": "decopy-gateway (image fetch)",
            }
            request = client.build_request(
                "GET", current.copy_with(host=str(ip)), headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    current = self._redirect(current, response.headers["location"], param)
                    continue
                if response.status_code != 200:
                    raise InvalidRequest(
                        f"The image URL answered HTTP {response.status_code}.", param=param, code="image_fetch_failed"
                    )
                return to_image(await self._read(response, param), param=param, max_bytes=self.max_bytes)
            finally:
                await response.aclose()
        raise InvalidRequest(
            f"The image URL redirects more than {MAX_REDIRECTS} times.", param=param, code="image_fetch_failed"
        )

    @classmethod
    def _redirect(cls, current: httpx.URL, location: str, param: str) -> httpx.URL:
        """Where a redirect points; 400 ``image_fetch_failed`` when its Location is no URL."""
        try:
            target = str(current.join(location))
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise InvalidRequest(
                "The image URL redirects to something that is not a URL.", param=param, code="image_fetch_failed"
            ) from None
        return cls._parse(target, param)

    @staticmethod
    def _parse(url: str, param: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            raise InvalidRequest("The image URL is not a valid URL.", param=param, code="invalid_image") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise InvalidRequest(
                "An image URL must be a data: URL or an http(s) URL.", param=param, code="invalid_image"
            )
        return parsed

    async def _checked_address(self, host: str, port: int, param: str) -> IPAddress:
        """The address to connect to, once every address ``host`` resolves to passed :func:`refusal`."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise InvalidRequest(
                f"The image URL's host '{host}' could not be resolved.", param=param, code="image_fetch_failed"
            ) from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for ip in addresses:
            why = refusal(ip, self.allow)
            if why is not None:
                raise InvalidRequest(
                    f"The image URL points at a {why} address; the gateway fetches images only from public addresses.",
                    param=param,
                    code="image_url_forbidden",
                )
        if not addresses:
            raise InvalidRequest(
                f"The image URL's host '{host}' could not be resolved.", param=param, code="image_fetch_failed"
            )
        return addresses[0]

    async def _read(self, response: httpx.Response, param: str) -> bytes:
        too_large = InvalidRequest(
            f"The image is larger than the limit of {self.max_bytes} bytes.", param=param, code="image_too_large"
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)
