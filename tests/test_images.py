"""Images in chat messages: data: URLs and http(s) URLs reach decopy as ``upload_images``;
every check is a 400; URLs into the gateway's own network are refused (SSRF), after DNS and redirects.

The image server runs on 127.0.0.2 (Linux routes all of 127/8 to the loopback interface), the
one network the ``compat_gateway`` exempts (``IMAGE_FETCH_ALLOW_NETWORKS=127.0.0.2/32``). A twin
server on 127.0.0.1, same port, records every request it gets: the refused URLs point there,
so "refused" is shown by the gateway's answer *and* by that server never being asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import openai
import pytest

from api.engine.image_fetch import ImageFetcher, refusal
from shared.errors import InvalidRequest
from tests.conftest import IMAGE_HOST, Gateway


def _png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64) + b"\xff\xd9"
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
BIG = _png() + bytes(150_000)  # over the compat gateway's IMAGE_MAX_BYTES (100000)
HTML = b"<!DOCTYPE html><html><body>not an image</body></html>"
SLOW_SECONDS = 4  # the compat gateway's IMAGE_FETCH_TIMEOUT is 2


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@dataclass
class ImageServer:
    port: int
    seen: dict[str, list[str]] = field(default_factory=lambda: {"allowed": [], "forbidden": []})

    def url(self, path: str, host: str = IMAGE_HOST) -> str:
        return f"http://{host}:{self.port}{path}"


def _handler(server: ImageServer, which: str) -> type[BaseHTTPRequestHandler]:
    bodies = {
        "/png": (PNG, "text/plain"),
        "/jpeg": (JPEG, "image/jpeg"),
        "/gif": (GIF, "image/gif"),
        "/webp": (WEBP, "application/octet-stream"),
        "/html-as-png": (HTML, "image/png"),
        "/big": (BIG, "image/png"),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.seen[which].append(self.path)
            path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
            if path == "/redirect":
                return self._reply(302, b"", "text/plain", [("Location", query["to"][0])])
            if path == "/loop":
                hops = int(query.get("n", ["0"])[0])
                return self._reply(302, b"", "text/plain", [("Location", f"/loop?n={hops + 1}")])
            if path == "/slow":
                time.sleep(SLOW_SECONDS)
                return self._reply(200, PNG, "image/png")
            if path == "/big-chunked":  # no Content-Length: the cap must hold while reading
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(BIG), 16384):
                    part = BIG[i : i + 16384]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return None
            if path in bodies:
                return self._reply(200, *bodies[path])
            return self._reply(404, b"not found", "text/plain")

        def _reply(self, status: int, body: bytes, ctype: str, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the gateway hanging up on /slow or /big is the point of those tests


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    servers: list[ThreadingHTTPServer] = []
    for _ in range(20):  # the twin needs the same port free on 127.0.0.1
        allowed = QuietServer((IMAGE_HOST, 0), BaseHTTPRequestHandler)
        port = allowed.server_address[1]
        try:
            twin = QuietServer(("127.0.0.1", port), BaseHTTPRequestHandler)
        except OSError:
            allowed.server_close()
            continue
        servers = [allowed, twin]
        break
    assert servers, "no port free on both 127.0.0.2 and 127.0.0.1"
    info = ImageServer(port)
    for srv, which in zip(servers, ("allowed", "forbidden")):
        srv.RequestHandlerClass = _handler(info, which)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield info
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _ask(gw: Gateway, tag: str, *urls: str, model: str = "decopy-gpt-4o-mini") -> openai.types.chat.ChatCompletion:
    content: list[dict[str, Any]] = [{"type": "text", "text": f"{tag} what is this?"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return gw.client().chat.completions.create(model=model, messages=[{"role": "user", "content": content}])  # type: ignore[misc, list-item]


def _uploaded(gw: Gateway, tag: str) -> dict[str, Any]:
    (create,) = [e for e in gw.sim_entries(tag) if e["kind"] == "create"]
    assert create["outcome"] == "ok", create
    return dict(create["image"])


def _refused(gw: Gateway, tag: str, url: str, code: str) -> str:
    with pytest.raises(openai.BadRequestError) as exc:
        _ask(gw, tag, url)
    body = exc.value.body
    assert body["param"] == "messages[0].content[1].image_url.url"  # type: ignore[index]
    assert body["code"] == code, body  # type: ignore[index]
    assert gw.sim_entries(tag) == []  # decopy never saw the request
    return exc.value.message


# --- data: URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("data, ext", [(PNG, "png"), (JPEG, "jpeg"), (GIF, "gif"), (WEBP, "webp")])
def test_data_url_reaches_upstream_as_upload_images(gateway: Gateway, tag: str, data: bytes, ext: str) -> None:
    # The declared type is wrong on purpose: the bytes decide.
    resp = _ask(gateway, tag, data_url(data, "image/png" if ext != "png" else "image/jpeg"))
    assert resp.choices[0].message.content
    assert _uploaded(gateway, tag) == {
        "filename": f"image.{ext}",
        "content_type": f"image/{ext}",
        "size": len(data),
        "sha256": sha(data),
    }


@pytest.mark.parametrize(
    "url, code, words",
    [
        (data_url(HTML, "image/png"), "invalid_image", "not a PNG, JPEG, GIF or WebP"),
        ("data:image/png;base64,iVBORw0KGgo%%%not-base64", "invalid_image", "not valid base64"),
        ("data:image/png," + PNG.decode("latin-1")[:20], "invalid_image", "data:image/png;base64"),
        (data_url(BIG), "image_too_large", "limit of 100000 bytes"),
        ("ftp://127.0.0.2/x.png", "invalid_image", "http(s) URL"),
        ("file:///etc/passwd", "invalid_image", "http(s) URL"),
        ("gopher://127.0.0.1:6379/_INFO", "invalid_image", "http(s) URL"),
    ],
)
def test_bad_images_are_400(compat_gateway: Gateway, tag: str, url: str, code: str, words: str) -> None:
    assert words in _refused(compat_gateway, tag, url, code)


def test_last_image_of_the_conversation_is_sent(compat_gateway: Gateway, images: ImageServer, tag: str) -> None:
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"{tag} first"},
                {"type": "image_url", "image_url": {"url": data_url(PNG)}},
            ],
        },
        {"role": "assistant", "content": "A red square."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(JPEG)}},
                {"type": "image_url", "image_url": {"url": images.url("/gif")}},
                {"type": "text", "text": "and these?"},
            ],
        },
    ]
    compat_gateway.client().chat.completions.create(model="decopy-deepseek-v3", messages=messages)  # type: ignore[arg-type]
    assert _uploaded(compat_gateway, tag)["sha256"] == sha(GIF)


# --- http(s) URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("path, data, ext", [("/png", PNG, "png"), ("/webp", WEBP, "webp"), ("/jpeg", JPEG, "jpeg")])
def test_fetched_url_reaches_upstream(
    compat_gateway: Gateway, images: ImageServer, tag: str, path: str, data: bytes, ext: str
) -> None:
    _ask(compat_gateway, tag, images.url(path))  # /png and /webp are served with a wrong Content-Type
    assert _uploaded(compat_gateway, tag) == {
        "filename": f"image.{ext}",
        "content_type": f"image/{ext}",
        "size": len(data),
        "sha256": sha(data),
    }


def test_redirect_within_allowed_network_is_followed(compat_gateway: Gateway, images: ImageServer, tag: str) -> None:
    _ask(compat_gateway, tag, images.url("/redirect?to=" + images.url("/gif")))
    assert _uploaded(compat_gateway, tag)["sha256"] == sha(GIF)
    _ask(compat_gateway, tag + "r", images.url("/redirect?to=/png"))  # relative Location
    assert _uploaded(compat_gateway, tag + "r")["sha256"] == sha(PNG)


@pytest.mark.parametrize(
    "path, code, words",
    [
        ("/html-as-png", "invalid_image", "not a PNG, JPEG, GIF or WebP"),
        ("/big", "image_too_large", "limit of 100000 bytes"),
        ("/big-chunked", "image_too_large", "limit of 100000 bytes"),
        ("/missing", "image_fetch_failed", "HTTP 404"),
        ("/loop", "image_fetch_failed", "more than 3 times"),
        ("/slow", "image_fetch_timeout", "within 2 s"),
    ],
)
def test_fetch_failures_are_400(
    compat_gateway: Gateway, images: ImageServer, tag: str, path: str, code: str, words: str
) -> None:
    assert words in _refused(compat_gateway, tag, images.url(path), code)
    if path == "/loop":
        assert sum(p.startswith("/loop") for p in images.seen["allowed"]) >= 4  # 1 + 3 redirects, no more


# --- SSRF: the gateway's own network is out of reach ---------------------------------------------

FORBIDDEN_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "2130706433",
    "169.254.169.254",
    "10.0.0.1",
    "192.168.1.1",
    "0.0.0.0",
    "[fe80::1]",
    "224.0.0.1",
]


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
def test_urls_into_the_gateways_network_are_refused(
    compat_gateway: Gateway, images: ImageServer, tag: str, host: str
) -> None:
    before = len(images.seen["forbidden"])
    message = _refused(compat_gateway, tag, images.url("/png", host=host), "image_url_forbidden")
    assert "only from public addresses" in message
    assert len(images.seen["forbidden"]) == before  # the twin on 127.0.0.1 was never asked


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/png",
        "http://localhost:{port}/png",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
def test_redirect_out_of_the_allowed_network_is_refused(
    compat_gateway: Gateway, images: ImageServer, tag: str, target: str
) -> None:
    before = len(images.seen["forbidden"])
    to = target.format(port=images.port)
    code = "invalid_image" if to.startswith("file:") else "image_url_forbidden"
    _refused(compat_gateway, tag, images.url("/redirect?to=" + to), code)
    assert images.seen["allowed"][-1].startswith("/redirect")  # the first hop was fetched...
    assert len(images.seen["forbidden"]) == before  # ...the second never


def test_default_settings_refuse_even_the_test_image_server(gateway: Gateway, images: ImageServer, tag: str) -> None:
    before = len(images.seen["allowed"])
    _refused(gateway, tag, images.url("/png"), "image_url_forbidden")
    assert len(images.seen["allowed"]) == before


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "not public"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:a9fe:a9fe::1", "link-local"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_check(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


def test_allowed_networks_exempt_only_themselves() -> None:
    allow = (ipaddress.ip_network("127.0.0.2/32"),)
    assert refusal(ipaddress.ip_address("127.0.0.2"), allow) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.2"), allow) is None
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow) == "loopback"
    assert refusal(ipaddress.ip_address("127.0.0.3"), allow) == "loopback"


# --- https: the checked address is dialled, the certificate is checked against the URL's name ---


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test CA")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=decopy-gateway test CA",
    )
    _openssl("req", *ec, "-keyout", str(d / "leaf.key"), "-out", str(d / "leaf.csr"), "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(d / "leaf.csr"),
        "-CA",
        str(d / "ca.pem"),
        "-CAkey",
        str(d / "ca.key"),
        "-CAcreateserial",
        "-out",
        str(d / "leaf.pem"),
        "-days",
        "2",
        "-extfile",
        str(d / "ext"),
    )
    return d


def test_https_dials_the_checked_address_and_verifies_the_name(tls_files: Path) -> None:
    # `localhost` resolves (here) to loopback only, which this fetcher is told to allow: the
    # URL's name must then still be what TLS sends (SNI) and checks the certificate against.
    family, _, _, _, addr = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0]
    seen: dict[str, Any] = {"sni": [], "host": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen["host"].append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls_files / "leaf.pem", tls_files / "leaf.key")
    server_ctx.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)
    server = Server((str(addr[0]), 0), Handler)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    fetcher = ImageFetcher(
        max_bytes=10_000,
        timeout=10,
        tls=client_ctx,
        allow_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    )

    async def fetch(url: str) -> Any:
        try:
            return await fetcher.fetch(url, param="image")
        except InvalidRequest as exc:
            return exc

    try:
        image = asyncio.run(fetch(f"https://localhost:{port}/png"))
        assert isinstance(image, dict) and image["data"] == PNG and image["content_type"] == "image/png"
        assert seen == {"sni": ["localhost"], "host": [f"localhost:{port}"]}
        # Same server by its address: the certificate names only `localhost`, so TLS must fail.
        literal = f"[{addr[0]}]" if family == socket.AF_INET6 else addr[0]
        refused = asyncio.run(fetch(f"https://{literal}:{port}/png"))
        assert isinstance(refused, InvalidRequest) and refused.code == "image_fetch_failed", refused
        assert refused.message == "The image URL could not be fetched: ConnectError."  # the TLS handshake
        assert seen["sni"] == ["localhost", None]  # it reached the handshake (no SNI for an address)...
        assert seen["host"] == [f"localhost:{port}"]  # ...and no request got through
    finally:
        server.shutdown()
        server.server_close()
