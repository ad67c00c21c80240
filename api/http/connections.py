"""What a slow or idle client may cost the API: bounded time per request, bounded connections.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) and refuses requests over
a connection count with a 503 (``limit_concurrency``), and both are set from settings here. It
has no bound on the time a client takes to send a request's headers or its body: a socket that
connects and sends nothing, or sends one byte every few seconds, is held for ever, and a few
thousand of them exhaust the process's file descriptors. :class:`GuardedProtocol` adds those
two bounds to uvicorn's httptools protocol:

- ``API_HEADER_TIMEOUT``: from the connection's start (or the first byte of a following request
  on a keep-alive connection) to the end of the request's headers;
- ``API_BODY_TIMEOUT``: from the end of the headers to the end of the body.

Past either, the client gets ``408 Request Timeout`` (when it had begun a request) and the
connection is closed; a handler still waiting for the body sees a client disconnect.

The protocol and its config reach into uvicorn's protocol (its parser callbacks and its
``transport``/``cycle`` attributes), so they live in uvicorn's fence, :mod:`api.http.shutdown`,
with those parts listed (``tests/unit/test_fences.py`` fails by name if an upgrade moves one;
``tests/test_hardening_connections.py`` checks the deadlines end to end); they are re-exported
here. :func:`raise_open_file_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at start,
and :func:`connection_cap` keeps the 503 cap below what the descriptors allow.
"""

from __future__ import annotations

import logging
import resource

from api.http.shutdown import GuardedConfig, GuardedProtocol

__all__ = ["GuardedConfig", "GuardedProtocol", "connection_cap", "raise_open_file_limit"]

log = logging.getLogger("api.connections")

#: Descriptors kept for what is not a client connection (Redis, image fetches, logs, the listener).
RESERVED_FDS = 128


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one where the system allows; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may forbid it: keep what we have
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(wanted: int, open_files: int) -> int:
    """``API_MAX_CONNECTIONS``, lowered to what the open-file limit can hold (with a reserve)."""
    room = max(16, open_files - RESERVED_FDS)
    if wanted > room:
        log.warning(
            "API_MAX_CONNECTIONS=%d is more than the open-file limit (%d) allows: %d connections at most",
            wanted,
            open_files,
            room,
        )
        return room
    return wanted
