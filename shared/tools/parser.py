"""Find ``<tool_call>…</tool_call>`` blocks in an answer as it streams, however it is split.

:class:`CallParser` takes the upstream's text delta by delta and returns pieces:

- ``("text", s)``: answer text, to go out at once. Only what might still turn out to be markup
  is held back: the longest end of a delta that could begin ``<tool_call>``, a run of backticks
  whose length is not known yet, and whitespace that would end up right before a call.
- ``("call", raw)``: the text between a call's tags, once the closing tag has arrived.
- ``("open", raw)``: a call whose closing tag never came (the answer ended inside it, or the
  next call's opening tag came first).

Rules (the convention is in :mod:`shared.tools.convention`):

- Markup inside a fenced code block (a line opening with three or more backticks or tildes,
  closed by a line with at least as many) or an inline code span (a run of backticks, closed by
  a run of the same length or by the end of the line) is text, not a call.
- An answer that opens with ``<think>`` (a reasoning model) passes through as text up to and
  including ``</think>``: the API splits it off as reasoning (``api.engine.shaping``).
- Once a call has been seen, text is dropped: the turn ended at the call. Further calls are
  still found (parallel calls), and text between calls is dropped too.
- Nothing of the markup is ever text: a stray ``</tool_call>`` is dropped, and so is a half tag
  at the very end of the answer (a lone ``<`` is kept: it is more often a comparison than a
  cut-off tag).
"""

from __future__ import annotations

import re
from typing import Literal

from shared.tools.convention import CLOSE, OPEN

PieceKind = Literal["text", "call", "open"]
Piece = tuple[PieceKind, str]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: What may start markup (or a code span or fence) in text: the opening tag, or a run of fence characters.
_TEXT_MARK = re.compile(r"</?tool_call>|`+|~+")
_RUN = re.compile(r"`+|~+")
_CODE_END = re.compile(r"`+|\n")


def held_prefix(text: str, needle: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``needle``."""
    start = max(0, len(text) - len(needle) + 1)
    at = text.find(needle[0], start)
    while at >= 0:
        if needle.startswith(text[at:]):
            return len(text) - at
        at = text.find(needle[0], at + 1)
    return 0


class CallParser:
    """Splits one streamed answer into text and tool calls (see the module docstring)."""

    def __init__(self) -> None:
        self._buf = ""
        self._state: Literal["start", "think", "text", "fence", "code", "call"] = "start"
        self._fence = ""  # the run that opened the fence we are in
        self._code = 0  # the length of the backtick run that opened the code span we are in
        self._line_blank = True  # the current line so far is whitespace only (a fence may open)
        #: Calls found so far; text after the first one is dropped.
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        """The pieces ``text`` completes (possibly none: part of it may be held back)."""
        self._buf += text
        out: list[Piece] = []
        self._run(out, final=False)
        return out

    def end(self) -> list[Piece]:
        """The upstream ended: what was held back, decided."""
        out: list[Piece] = []
        self._run(out, final=True)
        return out

    # --- states ---------------------------------------------------------------------------

    def _run(self, out: list[Piece], *, final: bool) -> None:
        step = {
            "start": self._start,
            "think": self._think,
            "text": self._text_state,
            "fence": self._fence_state,
            "code": self._code_state,
            "call": self._call,
        }
        while self._buf and step[self._state](out, final):
            pass

    def _start(self, out: list[Piece], final: bool) -> bool:
        opened = self._buf.lstrip()
        if opened.startswith(THINK_OPEN):
            at = len(self._buf) - len(opened) + len(THINK_OPEN)
            self._emit(out, self._buf[:at])
            self._buf = self._buf[at:]
            self._state = "think"
            return True
        if not final and THINK_OPEN.startswith(opened):  # "", "<", "<thi": not decided yet
            return False
        self._state = "text"
        return True

    def _think(self, out: list[Piece], final: bool) -> bool:
        buf = self._buf
        at = buf.find(THINK_CLOSE)
        if at >= 0:
            end = at + len(THINK_CLOSE)
            self._emit(out, buf[:end])
            self._buf = buf[end:]
            self._state = "text"
            return True
        keep = 0 if final else held_prefix(buf, THINK_CLOSE)
        self._emit(out, buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep :]
        return False

    def _text_state(self, out: list[Piece], final: bool) -> bool:
        buf = self._buf
        m = _TEXT_MARK.search(buf)
        if m is None:
            if final:
                cut = max(held_prefix(buf, OPEN), held_prefix(buf, CLOSE))
                self._emit(out, buf[:-cut].rstrip() if cut >= 2 else buf)  # a half tag at the end is markup
                self._buf = ""
                return False
            # Keep back what may begin a tag, and the whitespace before it (it would go with a call).
            sent = buf[: len(buf) - max(held_prefix(buf, OPEN), held_prefix(buf, CLOSE))].rstrip()
            self._emit(out, sent)
            self._buf = buf[len(sent) :]
            return False
        mark = m.group()
        if mark == OPEN:
            self._emit(out, buf[: m.start()].rstrip())
            self._buf = buf[m.end() :]
            self._state = "call"
            return True
        if mark == CLOSE:  # a closing tag without a call: markup all the same, never text
            self._emit(out, buf[: m.start()])
            self._buf = buf[m.end() :]
            return True
        self._emit(out, buf[: m.start()])
        if m.end() == len(buf) and not final:  # a run of backticks may go on in the next delta
            self._buf = buf[m.start() :]
            return False
        fence = self._line_blank and len(mark) >= 3
        self._emit(out, mark)
        self._buf = buf[m.end() :]
        if fence:
            self._state, self._fence = "fence", mark
        elif mark[0] == "`":
            self._state, self._code = "code", len(mark)
        return True

    def _at_line_start(self, buf: str, at: int) -> bool:
        nl = buf.rfind("\n", 0, at)
        if nl >= 0:
            return not buf[nl + 1 : at].strip()
        return self._line_blank and not buf[:at].strip()

    def _fence_state(self, out: list[Piece], final: bool) -> bool:
        buf, fence = self._buf, self._fence
        for m in _RUN.finditer(buf):
            run = m.group()
            if run[0] == fence[0] and len(run) >= len(fence) and self._at_line_start(buf, m.start()):
                self._emit(out, buf[: m.end()])
                self._buf = buf[m.end() :]
                self._state = "text"
                return True
        keep = 0
        if not final:  # the last line may be the beginning of the closing fence
            nl = buf.rfind("\n")
            tail = buf[nl + 1 :].lstrip(" \t")
            if tail and not tail.strip(fence[0]) and self._at_line_start(buf, len(buf) - len(tail)):
                keep = len(tail)
        self._emit(out, buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep :]
        return False

    def _code_state(self, out: list[Piece], final: bool) -> bool:
        buf = self._buf
        for m in _CODE_END.finditer(buf):
            mark = m.group()
            if mark != "\n" and m.end() == len(buf) and not final:
                self._emit(out, buf[: m.start()])  # the run may go on in the next delta
                self._buf = buf[m.start() :]
                return False
            if mark == "\n" or len(mark) == self._code:
                self._emit(out, buf[: m.end()])
                self._buf = buf[m.end() :]
                self._state = "text"
                return True
        self._emit(out, buf)
        self._buf = ""
        return False

    def _call(self, out: list[Piece], final: bool) -> bool:
        buf = self._buf
        at = buf.find(CLOSE)
        again = buf.find(OPEN)
        if again >= 0 and (at < 0 or again < at):  # the next call began before this one was closed
            out.append(("open", buf[:again]))
            self.calls += 1
            self._buf = buf[again + len(OPEN) :]
            return True
        if at >= 0:
            out.append(("call", buf[:at]))
            self.calls += 1
            self._buf = buf[at + len(CLOSE) :]
            self._state = "text"
            self._line_blank = False
            return True
        if final:
            out.append(("open", buf))
            self.calls += 1
            self._buf = ""
        return False

    # --- output ---------------------------------------------------------------------------

    def _emit(self, out: list[Piece], text: str) -> None:
        if not text:
            return
        nl = text.rfind("\n")
        if nl >= 0:
            self._line_blank = not text[nl + 1 :].strip()
        elif text.strip():
            self._line_blank = False
        if self.calls:
            return  # the turn ended at the call: text after it is dropped
        if out and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + text)
        else:
            out.append(("text", text))
