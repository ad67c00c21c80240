"""Incremental parser for decopy's job event stream.

Feed it bytes as they arrive; it returns the text deltas found so far and notes the end marker.
A ``data:`` line is taken on its own as soon as it is complete (decopy sends one JSON object per
line), which adds no latency; a payload that only parses when joined with the following
``data:`` lines of the same event (the SSE spec's multi-line form) is tried at the blank line.
Anything else is logged and skipped: one bad line must not end an answer.
"""

from __future__ import annotations

import logging

import orjson

log = logging.getLogger("worker.sse")

END_MARKER = "Data transfer completed."


class StreamParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._pending: list[str] = []  # data lines of the current event that did not parse alone
        self.ended = False
        self.skipped = 0

    def feed(self, data: bytes) -> list[str]:
        """Parse ``data``; return the deltas it completed, in order."""
        if self.ended:
            return []
        self._buffer += data
        if b"\n" not in self._buffer and b"\r" not in self._buffer:
            return []
        *lines, self._buffer = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        out: list[str] = []
        for raw in lines:
            self._line(raw, out)
            if self.ended:
                break
        return out

    def _line(self, raw: bytes, out: list[str]) -> None:
        if not raw:
            self._flush_pending(out)
            return
        if not raw.startswith(b"data:"):
            return  # comments, event:, id:, retry: carry nothing we use
        payload = raw[5:]
        if payload.startswith(b" "):
            payload = payload[1:]
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._skip(raw, "not UTF-8")
            return
        if text.strip() == END_MARKER:
            self.ended = True
            return
        delta = self._delta(text)
        if delta is None:
            self._pending.append(text)
        else:
            if self._pending:
                self._skip("\n".join(self._pending).encode(), "neither JSON nor the end marker")
                self._pending.clear()
            if delta:
                out.append(delta)

    def _delta(self, text: str) -> str | None:
        """The delta of one payload; "" for a JSON object without text; None if not JSON."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if isinstance(obj, dict):
            piece = obj.get("data")
            if isinstance(piece, str):
                return piece
            if piece is not None:
                self._skip(text.encode(), "'data' is not a string")
            return ""
        self._skip(text.encode(), "JSON payload is not an object")
        return ""

    def _flush_pending(self, out: list[str]) -> None:
        if not self._pending:
            return
        joined = "\n".join(self._pending)
        self._pending.clear()
        delta = self._delta(joined)
        if delta is None:
            self._skip(joined.encode(), "neither JSON nor the end marker")
        elif delta:
            out.append(delta)

    def _skip(self, raw: bytes, why: str) -> None:
        self.skipped += 1
        log.warning("skipped upstream line (%s): %r", why, raw[:200])
