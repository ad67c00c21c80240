"""The record of every place the gateway leans on a library's private parts, and where each lives.

Speed work reached into private parts of redis-py, arq, sse-starlette, uvicorn, aiohttp, requests,
cloudscraper and urllib3 (each one measured: the module that does it says what it saves). Such a
use is kept in one module per library, its *fence*, named in :data:`FENCES`; nothing outside a
fence touches that library's private parts. Each fence lists its uses in ``PRIVATE_USES``, one
:class:`PrivateUse` per attribute, with a one-line reason, and ``tests/unit/test_fences.py`` checks
every one against the installed version: an upgrade that removes or changes one fails there by
name (library, version, attribute), not in production. ``pyproject.toml`` allows only the
versions tested (``constraints.txt`` pins them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateUse:
    """One private part of a library the gateway relies on."""

    #: The distribution's name (what ``importlib.metadata.version`` takes), e.g. ``"redis"``.
    library: str
    #: ``"module:Qualified.name"``; an instance attribute is written ``"module:Class().name"``.
    target: str
    #: Why the public API does not do (one line).
    reason: str
    #: For a method the fence overrides or calls: its parameter names, which must not change.
    params: tuple[str, ...] | None = None


#: Each library with private uses, and the one module that holds them.
FENCES: dict[str, str] = {
    "redis": "shared.redis_fence",
    "arq": "worker.jobs.arq_fence",
    "sse-starlette": "api.http.sse",
    "uvicorn": "api.http.shutdown",
    "aiohttp": "worker.upstream.decopy.fence",
    "cloudscraper": "worker.upstream.decopy.fence",
    "urllib3": "worker.upstream.decopy.fence",
}
