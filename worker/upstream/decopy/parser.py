"""Incremental parser for decopy's answer: the pieces of a ``get-job`` event stream.

Feed it bytes as they arrive; it returns the text deltas found so far and notes the end marker.
A ``data:`` line is taken on its own as soon as it is complete (decopy sends one JSON object per
line), which adds no latency; a payload that only parses when joined with the following
``data:`` lines of the same event (the SSE spec's multi-line form) is tried at the blank line.

No answer text is lost in silence. A payload orjson reads (nearly all) takes the fast path; one
it refuses is read again leniently: raw control characters inside a JSON string are accepted,
bytes that are not UTF-8 are kept aside, and the :class:`Mender` joins what the upstream split
between two pieces (a UTF-8 byte sequence, a UTF-16 surrogate pair). What truly cannot be
decoded becomes U+FFFD (counted in ``replaced`` and in the worker's metric), and the rest of the
piece goes through. Payloads that are not answer pieces (comments, keep-alives, other events,
JSON without ``data``) are logged and skipped as ``upstream-decopy.md`` says; a payload that is
an answer piece (it names a ``"data"`` field) and still cannot be read raises
:class:`UnreadablePiece`, which fails the answer: a clean stop with text missing is worse.
"""

from __future__ import annotations

import codecs
import json
import logging
import re

import orjson

from shared.metrics import upstream_chars_replaced

log = logging.getLogger("worker.sse")

END_MARKER = "Data transfer completed."
BOM = b"\xef\xbb\xbf"
REPLACEMENT = "\ufffd"

#: A payload that claims to be an answer piece: a JSON object naming a ``data`` field.
_ANSWER_PIECE = re.compile(rb'^\s*\{.*"data"\s*:', re.S)


class UnreadablePiece(Exception):
    """An answer piece that could not be read even leniently; the answer must fail, not stop."""


class Mender:
    """Joins what an upstream split between pieces, and replaces what cannot be decoded.

    Input is a piece's text as read leniently: bytes that were not UTF-8 arrive as the
    ``surrogateescape`` code points U+DC80..U+DCFF (only when ``raw`` says the piece had such
    bytes), JSON ``\\uXXXX`` escapes of lone surrogates as themselves. An incomplete UTF-8
    sequence or a lone high surrogate at the end of a piece is held for the next one.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._high = ""  # a high surrogate waiting for its low half
        self.replaced = 0

    @property
    def pending(self) -> bool:
        return bool(self._high or self._decoder.getstate()[0])

    def mend(self, text: str, *, raw: bool) -> str:
        out: list[str] = []
        for ch in text:
            code = ord(ch)
            if raw and 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 on its own
                self._drop_high(out)
                self._emit(out, self._decoder.decode(bytes((code - 0xDC00,))))
                continue
            self._flush_bytes(out)
            if 0xD800 <= code <= 0xDBFF:
                self._drop_high(out)
                self._high = ch
            elif 0xDC00 <= code <= 0xDFFF:
                if self._high:
                    out.append(chr(0x10000 + ((ord(self._high) - 0xD800) << 10) + (code - 0xDC00)))
                    self._high = ""
                else:
                    self._emit(out, REPLACEMENT)
            else:
                self._drop_high(out)
                out.append(ch)
        return "".join(out)

    def finish(self) -> str:
        """What is still held at the end of the answer, as replacement characters."""
        out: list[str] = []
        self._drop_high(out)
        self._flush_bytes(out)
        return "".join(out)

    def _emit(self, out: list[str], text: str) -> None:
        if text:
            self.replaced += text.count(REPLACEMENT)
            out.append(text)

    def _drop_high(self, out: list[str]) -> None:
        if self._high:
            self._high = ""
            self._emit(out, REPLACEMENT)

    def _flush_bytes(self, out: list[str]) -> None:
        if self._decoder.getstate()[0]:
            self._emit(out, self._decoder.decode(b"", final=True))
            self._decoder.reset()


class PieceParser:
    """Reads one ``get-job`` answer: feed it bytes, get its text pieces; ``ended`` once the end
    marker came."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pending: list[bytes] = []  # data lines of the current event that did not parse alone
        self._started = False
        self._mender = Mender()
        self.ended = False
        self.skipped = 0

    @property
    def replaced(self) -> int:
        """Characters that could not be decoded and became U+FFFD."""
        return self._mender.replaced

    def feed(self, data: bytes) -> list[str]:
        """Parse ``data``; return the deltas it completed, in order (raises :class:`UnreadablePiece`)."""
        if self.ended:
            return []
        if not self._started:
            data = self._buffer + data
            self._buffer = b""
            if len(data) < len(BOM) and BOM.startswith(data):
                self._buffer = data  # too short to tell whether a byte-order mark begins the stream
                return []
            self._started = True
            if data.startswith(BOM):
                data = data[len(BOM) :]
        self._buffer += data
        if b"\n" not in self._buffer and b"\r" not in self._buffer:
            return []
        *lines, self._buffer = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        out: list[str] = []
        before = self._mender.replaced
        try:
            for raw in lines:
                self._line(raw, out)
                if self.ended:
                    if tail := self._mender.finish():
                        out.append(tail)
                    break
        finally:
            if self._mender.replaced != before:
                upstream_chars_replaced(self._mender.replaced - before)
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
        if payload.strip() == END_MARKER.encode():
            self._flush_pending(out)
            self.ended = True
            return
        delta = self._delta(payload)
        if delta is None:
            self._pending.append(payload)
        else:
            if self._pending:
                self._give_up(b"\n".join(self._pending))
                self._pending.clear()
            if delta:
                out.append(delta)

    def _delta(self, payload: bytes) -> str | None:
        """The delta of one payload; "" for a payload without text; None if it is not JSON."""
        try:
            obj, lenient, raw = orjson.loads(payload), False, False
        except orjson.JSONDecodeError:  # the slow path: read again leniently
            obj, raw = self._lenient(payload)
            if obj is None:
                return None
            lenient = True
        if isinstance(obj, dict):
            piece = obj.get("data")
            if isinstance(piece, str):
                # orjson's text has no lone surrogates and no stray bytes: it needs mending only
                # when the previous piece left half a character behind.
                if lenient or self._mender.pending:
                    return self._mender.mend(piece, raw=raw)
                return piece
            if piece is not None:
                self._skip(payload, "'data' is not a string")
            return ""
        self._skip(payload, "JSON payload is not an object")
        return ""

    @staticmethod
    def _lenient(payload: bytes) -> tuple[object, bool]:
        """Read a payload orjson refused: raw control characters, lone surrogates, bytes not UTF-8."""
        if payload.startswith(BOM):
            payload = payload[len(BOM) :]
        try:
            text, raw = payload.decode("utf-8"), False
        except UnicodeDecodeError:
            text, raw = payload.decode("utf-8", "surrogateescape"), True
        try:
            return json.loads(text, strict=False), raw
        except ValueError:
            return None, False

    def _flush_pending(self, out: list[str]) -> None:
        if not self._pending:
            return
        joined = b"\n".join(self._pending)
        self._pending.clear()
        delta = self._delta(joined)
        if delta is None:
            self._give_up(joined)
        elif delta:
            out.append(delta)

    def _give_up(self, payload: bytes) -> None:
        """A payload that no reading could parse: skipped, unless it is an answer piece."""
        if _ANSWER_PIECE.match(payload):
            log.warning("unreadable answer piece: %r", payload[:200])
            raise UnreadablePiece(f"an answer piece could not be read: {payload[:80]!r}")
        self._skip(payload, "neither JSON nor the end marker")

    def _skip(self, raw: bytes, why: str) -> None:
        self.skipped += 1
        log.warning("skipped upstream line (%s): %r", why, raw[:200])
