"""Images in chat messages: decode ``data:`` URLs and check that the bytes are an image.

The type is decided by the bytes' signature, never by the client's claim.
"""

from __future__ import annotations

import base64
import binascii

from shared.errors import InvalidRequest
from shared.messages import Image

# (signature check, content type, file extension)
_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", "png"),
    (b"\xff\xd8\xff", 0, "image/jpeg", "jpeg"),
    (b"GIF87a", 0, "image/gif", "gif"),
    (b"GIF89a", 0, "image/gif", "gif"),
    (b"WEBP", 8, "image/webp", "webp"),
)


def sniff(data: bytes) -> tuple[str, str] | None:
    """``(content_type, extension)`` of an image by its magic bytes, or None."""
    for magic, offset, ctype, ext in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if ext == "webp" and data[:4] != b"RIFF":
                continue
            return ctype, ext
    return None


def to_image(data: bytes, *, param: str, max_bytes: int) -> Image:
    if len(data) > max_bytes:
        raise InvalidRequest(
            f"The image is {len(data)} bytes; the limit is {max_bytes} bytes.", param=param, code="image_too_large"
        )
    kind = sniff(data)
    if kind is None:
        raise InvalidRequest("The image is not a PNG, JPEG, GIF or WebP image.", param=param, code="invalid_image")
    return Image(data=data, content_type=kind[0], extension=kind[1])


def decode_data_url(url: str, *, param: str, max_bytes: int) -> Image:
    """Decode ``data:image/...;base64,...``."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequest(
            "An image data URL must look like data:image/png;base64,<base64 data>.", param=param, code="invalid_image"
        )
    # base64 is 4/3 the size of the bytes: refuse early, before decoding a huge string.
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise InvalidRequest(
            f"The image is larger than the limit of {max_bytes} bytes.", param=param, code="image_too_large"
        )
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            "The image's base64 data is not valid base64.", param=param, code="invalid_image"
        ) from None
    return to_image(data, param=param, max_bytes=max_bytes)
