"""sse-starlette's ``EventSourceResponse``, minus a cancel scope per event when sends have no timeout.

sse-starlette wraps every send in ``anyio.move_on_after(send_timeout)``; with ``send_timeout``
unset (the gateway never sets it) that scope can never fire, yet creating, entering and leaving
it is a good part of the per-event cost on the hot path (30 events per answer). Everything
else (pings, disconnect watching, shutdown) is the library's own.
"""

from __future__ import annotations

from sse_starlette import EventSourceResponse as _LibraryEventSourceResponse
from starlette.types import Message, Send


class EventSourceResponse(_LibraryEventSourceResponse):
    """Same behaviour as sse-starlette's; sends without a timeout skip the no-op cancel scope."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
            return
        await super()._send_with_timeout(send, message)
