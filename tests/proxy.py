"""A tiny outbound proxy for the tests: HTTP forward proxy and SOCKS5, on 127.0.0.1, counting traffic.

Written here rather than taken from PyPI (``pproxy`` would do) because it is ~120 lines and
needs to count requests and stamp them: each HTTP request it forwards gets an ``x-via-proxy:
<name>`` header, which the decopy simulator's log then shows. ``hosts`` maps made-up host names
to 127.0.0.1 so a test can give the workers an upstream URL that only the proxy can reach.

It runs its own event loop in a daemon thread; :meth:`Proxy.stop` closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
import threading
from urllib.parse import urlsplit


class Proxy:
    """One proxy server (HTTP and SOCKS5 on the same port, told apart by the first byte)."""

    def __init__(self, name: str, hosts: dict[str, str] | None = None) -> None:
        self.name = name
        self.hosts = hosts or {}
        self.connections = 0
        self.http_requests = 0
        self.socks_connects = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{name}", daemon=True)

    def start(self) -> Proxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _resolve(self, host: str) -> str:
        return self.hosts.get(host, host)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        opened: list[asyncio.StreamWriter] = [writer]  # every connection this one opens, closed at the end
        try:
            first = await reader.readexactly(1)
            if first == b"\x05":
                await self._socks5(reader, writer, opened)
            else:
                await self._http(first, reader, writer, opened)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for w in opened:
                w.close()
                with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                    await w.wait_closed()
            self._tasks.discard(task)

    async def _socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: list[asyncio.StreamWriter]
    ) -> None:
        (n_methods,) = await reader.readexactly(1)
        await reader.readexactly(n_methods)
        writer.write(b"\x05\x00")  # no authentication
        version, command, _, atyp = await reader.readexactly(4)
        if version != 5 or command != 1:
            raise ValueError("only SOCKS5 CONNECT")
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            raise ValueError("bad address type")
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        up_reader, up_writer = await asyncio.open_connection(self._resolve(host), port)
        opened.append(up_writer)
        self.socks_connects += 1
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
        await writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _http(
        self,
        first: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opened: list[asyncio.StreamWriter],
    ) -> None:
        up_writer: asyncio.StreamWriter | None = None
        back: asyncio.Task[None] | None = None
        head = first + await reader.readuntil(b"\r\n\r\n")
        try:
            while True:
                line, _, rest = head.partition(b"\r\n")
                method, target, version = line.decode("latin-1").split(" ", 2)
                if method == "CONNECT":  # https targets: a plain tunnel
                    host, _, port = target.rpartition(":")
                    up_reader, up_writer = await asyncio.open_connection(self._resolve(host), int(port))
                    opened.append(up_writer)
                    self.http_requests += 1
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await _pipe_both(reader, writer, up_reader, up_writer)
                    return
                url = urlsplit(target)
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_connection(
                        self._resolve(url.hostname or ""), url.port or 80
                    )
                    opened.append(up_writer)
                    back = asyncio.create_task(_pipe(up_reader, writer))
                self.http_requests += 1
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                headers = rest[:-4].split(b"\r\n") if rest[:-4] else []
                headers = [h for h in headers if not h.lower().startswith(b"proxy-")]
                headers.append(b"x-via-proxy: " + self.name.encode())
                length = 0
                for h in headers:
                    name, _, value = h.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                    if name.strip().lower() == b"transfer-encoding":
                        raise ValueError("chunked request bodies are not supported by this test proxy")
                up_writer.write(f"{method} {path} {version}\r\n".encode() + b"\r\n".join(headers) + b"\r\n\r\n")
                if length:
                    up_writer.write(await reader.readexactly(length))
                await up_writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")  # the next request on this connection
        finally:
            if back is not None:
                back.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await back


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
