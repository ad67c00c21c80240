"""The one small interface between the worker and an upstream chat service.

An upstream runs on the worker's event loop: :meth:`Upstream.pieces` starts a job from a prompt
and optional image and yields what arrives, batch by batch: a ``list[str]`` of text deltas (the
hot path: decopy yields nothing else, no object per piece), or one typed piece, a
:class:`Reasoning`, a :class:`ToolCallPiece` or a :class:`Finish` (an upstream that marks them
itself, such as an OpenAI-compatible one). It raises :class:`UpstreamFailure` for anything else.
Cancelling the task that reads it (or closing the iterator) lets go of the upstream call at
once. :class:`Call` is for the synchronous calls an upstream may still make in a thread
(decopy: cloudscraper solving a challenge): another thread calls :meth:`Call.cancel` to make a
blocked read return at once.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from shared.messages import ChatJob, ToolCall
from shared.metrics import UpstreamErrorKind

#: Kinds of upstream failure (one list, with the metric's labels: ``shared.metrics``).
FailureKind = UpstreamErrorKind


class UpstreamFailure(Exception):
    """The upstream did not answer as it should. ``retryable`` only matters before the first delta."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        body: str | None = None,
        replace_session: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.status = status
        self.body = body
        self.replace_session = replace_session
        self.retry_after = retry_after  # what the upstream asked for (a 429's Retry-After), if anything

    def to_gateway_error(self, attempts: int) -> GatewayError:
        tried = f" (after {attempts} attempt{'s' if attempts != 1 else ''})"
        if self.kind in ("cloudflare", "rate_limited"):
            return UpstreamUnavailable(
                f"Upstream unavailable: {self.message}{tried}.",
                code=f"upstream_{self.kind}",
                retry_after=max(1, round(self.retry_after)) if self.retry_after else 10,
            )
        if self.kind == "timeout":
            return UpstreamTimeout(f"Upstream timed out: {self.message}{tried}.")
        return UpstreamError(f"Upstream error: {self.message}{tried}.", code=f"upstream_{self.kind}")


class Call:
    """One upstream call in progress; :meth:`cancel` interrupts it from any thread."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_cancel(self, closer: Callable[[], None]) -> None:
        with self._lock:
            if self.cancelled.is_set():
                closer()
            else:
                self._closers.append(closer)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            closers, self._closers = self._closers, []
        for closer in closers:
            try:
                closer()
            except Exception:  # closing a socket that is already closed
                pass


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning, marked as such by the upstream."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallPiece:
    """One whole tool call the upstream made natively."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the answer ended, when the upstream says (``stop``, ``length``, ``tool_calls``)."""

    reason: str


#: What :meth:`Upstream.pieces` yields: text deltas that arrived together, or one typed piece.
Batch = list[str] | Reasoning | ToolCallPiece | Finish


class Upstream(Protocol):
    name: str

    def pieces(self, job: ChatJob) -> AsyncIterator[Batch]:
        """Start the job upstream (model ``job["upstream_model"]``) and yield what it answers,
        batch by batch, until the end."""
        ...

    async def aclose(self) -> None: ...


def trim(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters (an answer quoted in a message)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
