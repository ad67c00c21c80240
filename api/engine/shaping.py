"""Shape the upstream's text into the answer the client gets: reasoning, stop sequences, token limit.

decopy cannot stop at a sequence, count tokens or mark its reasoning, so the API does all three on
the text as it streams past, one delta at a time (:class:`Shaper`):

- **Reasoning.** For the models in ``REASONING_MODELS`` (unless ``REASONING_SPLIT`` is off), an
  answer that *opens* with ``<think>`` (after optional whitespace) has everything up to
  ``</think>`` returned as reasoning, the rest as content (the DeepSeek API convention:
  ``reasoning_content``). Whitespace right after either tag is dropped. A ``<think>`` later in an
  answer is ordinary text. The tags may be split anywhere across deltas: a piece that might be
  the start of a tag is held back until the next delta decides it. An answer that ends inside
  the reasoning (no ``</think>``) has reasoning and no content.
- **Stop sequences** apply to the content (not to the reasoning), as OpenAI applies them to the
  generated answer: the content is cut before the first occurrence of any of them, even one
  split across deltas, and the answer ends with ``finish_reason: "stop"``. Only the longest end
  of the text that could still begin a stop sequence is held back; it goes out with the next
  delta or when the upstream ends.
- **Token limit** (``max_tokens`` / ``max_completion_tokens``) counts reasoning and content
  together with the gateway's estimate (:mod:`shared.tokens`), as DeepSeek and OpenAI count
  reasoning tokens against the limit. The text is cut at the last character that keeps the
  estimate within the limit and the answer ends with ``finish_reason: "length"``.

When :attr:`Shaped.finish` is set the answer is over: the caller ends the upstream call at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared.tokens import tokens_for

PieceKind = Literal["content", "reasoning"]
OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


@dataclass
class Shaped:
    """What to send for one delta: ``pieces`` in order, and ``finish`` once the answer must end."""

    pieces: list[tuple[PieceKind, str]] = field(default_factory=list)
    finish: Literal["stop", "length"] | None = None

    def add(self, kind: PieceKind, text: str) -> None:
        if not text:
            return
        if self.pieces and self.pieces[-1][0] == kind:
            self.pieces[-1] = (kind, self.pieces[-1][1] + text)
        else:
            self.pieces.append((kind, text))


#: Longest stop sequence accepted (OpenAI documents 4 sequences and no length; an unbounded one
#: let a single request hold the event loop): the held-back text is shorter than this.
MAX_STOP_CHARS = 256


def _held_prefix(text: str, needles: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of one of ``needles``.

    Only the last ``len(needle) - 1`` characters can be such an end, and only where the needle's
    first character occurs: found with ``str.find``, each checked once, longest first. The cost
    depends on the needles' length (bounded by ``MAX_STOP_CHARS``), never on the text's: the
    old check compared every beginning of a needle with the text's end, which grew with the
    square of their length (a 400 KB piece against 400 KB stops held the API for seconds).
    """
    best = 0
    size = len(text)
    for needle in needles:
        if len(needle) < 2:
            continue
        first = needle[0]
        at = text.find(first, max(0, size - len(needle) + 1))
        while at != -1 and size - at > best:
            if needle.startswith(text[at:]):
                best = size - at
                break
            at = text.find(first, at + 1)
    return best


class Shaper:
    """Shapes one answer. Call :meth:`feed` per upstream delta, then :meth:`end` if the upstream ended.

    ``stop``: the stop sequences (empty strings ignored); ``max_tokens``: the limit on the
    estimated tokens of reasoning plus content; ``reasoning``: split off a leading
    ``<think>…</think>``.
    """

    def __init__(self, *, stop: Sequence[str] = (), max_tokens: int | None = None, reasoning: bool = False) -> None:
        self._stop = [s for s in stop if s]
        self._max_tokens = max_tokens
        self._state: Literal["start", "think", "content"] = "start" if reasoning else "content"
        self._tag_buf = ""  # text that may be (part of) a <think> tag, not yet classified
        self._stop_buf = ""  # content that may be the beginning of a stop sequence
        self._strip: PieceKind | None = None  # drop leading whitespace of this kind (after a tag)
        self._ascii = 0
        self._other = 0
        self.finished = False
        #: The stop sequence that ended the answer, if one did (Anthropic reports it).
        self.stop_hit: str | None = None
        #: No reasoning split, stop sequence or token limit: every delta goes out as it came.
        self._plain = not reasoning and not self._stop and max_tokens is None
        #: A token limit alone (Anthropic's max_tokens is always set): a delta within it goes out as it came.
        self._limit_only = not reasoning and not self._stop and max_tokens is not None
        #: The limit the limit-only path compares against (set whenever that path is taken).
        self._limit_alone = max_tokens if max_tokens is not None else 0

    @property
    def tokens(self) -> int:
        """Estimated tokens of everything returned so far (reasoning and content)."""
        return tokens_for(self._ascii, self._other)

    def feed(self, text: str) -> Shaped:
        """Shape the next delta of the upstream's text."""
        if self.finished:
            return Shaped()
        if self._plain:  # the common case, once per delta: only count the tokens
            if not text:
                return Shaped()
            if text.isascii():
                self._ascii += len(text)
            else:
                ascii_chars = sum(1 for ch in text if ch < "\x80")
                self._ascii += ascii_chars
                self._other += len(text) - ascii_chars
            return Shaped([("content", text)])
        if self._limit_only and text.isascii():
            ascii_chars = self._ascii + len(text)
            if tokens_for(ascii_chars, self._other) <= self._limit_alone:
                self._ascii = ascii_chars
                return Shaped([("content", text)]) if text else Shaped()
        return self._emit(self._split(text, final=False), final=False)

    def feed_reasoning(self, text: str) -> Shaped:
        """Reasoning the upstream marked itself: counted against the token limit, never stopped."""
        if self.finished:
            return Shaped()
        return self._emit([("reasoning", text)], final=False)

    def count(self, text: str) -> None:
        """Count text that leaves by another way (a tool call's arguments) in :attr:`tokens`."""
        ascii_chars = len(text) if text.isascii() else sum(1 for ch in text if ch < "\x80")
        self._ascii += ascii_chars
        self._other += len(text) - ascii_chars

    def end(self) -> Shaped:
        """The upstream finished: release what was held back (``finish`` only if the limit cuts it)."""
        if self.finished:
            return Shaped()
        out = self._emit(self._split("", final=True), final=True)
        self.finished = True
        return out

    # --- reasoning: split the text at the <think> tags -------------------------------------

    def _split(self, text: str, *, final: bool) -> list[tuple[PieceKind, str]]:
        buf, self._tag_buf = self._tag_buf + text, ""
        out: list[tuple[PieceKind, str]] = []
        while buf:
            if self._state == "start":
                opened = buf.lstrip()
                if opened.startswith(OPEN_TAG):
                    self._state, self._strip = "think", "reasoning"
                    buf = opened[len(OPEN_TAG) :]
                elif not final and OPEN_TAG.startswith(opened):  # "", "<", "<th"...: undecided
                    self._tag_buf = buf
                    break
                else:
                    self._state = "content"
            elif self._state == "think":
                at = buf.find(CLOSE_TAG)
                if at >= 0:
                    self._push(out, "reasoning", buf[:at])
                    self._state, self._strip = "content", "content"
                    buf = buf[at + len(CLOSE_TAG) :]
                    continue
                keep = 0 if final else _held_prefix(buf, (CLOSE_TAG,))
                self._push(out, "reasoning", buf[: len(buf) - keep])
                self._tag_buf = buf[len(buf) - keep :]
                break
            else:
                self._push(out, "content", buf)
                break
        return out

    def _push(self, out: list[tuple[PieceKind, str]], kind: PieceKind, text: str) -> None:
        if self._strip == kind:  # whitespace right after a tag is layout, not text
            text = text.lstrip()
            if text:
                self._strip = None
        out.append((kind, text))

    # --- stop sequences and the token limit -------------------------------------------------

    def _emit(self, segments: list[tuple[PieceKind, str]], *, final: bool) -> Shaped:
        out = Shaped()
        if final and not any(kind == "content" for kind, _ in segments):
            segments.append(("content", ""))  # so the stop buffer is flushed
        for kind, text in segments:
            stopped = False
            if kind == "content":
                text, stopped = self._scan_stop(text, final=final)
            text, cut = self._within_limit(text)
            out.add(kind, text)
            if cut or stopped:
                out.finish = "length" if cut else "stop"
                self.finished = True
                return out
        return out

    def _scan_stop(self, text: str, *, final: bool) -> tuple[str, bool]:
        """The content that may go out now, and whether a stop sequence ends it there."""
        if not self._stop:
            return text, False
        buf = self._stop_buf + text
        hits = [at for at in (buf.find(s) for s in self._stop) if at >= 0]
        if hits:
            self._stop_buf = ""
            at = min(hits)
            self.stop_hit = next(s for s in self._stop if buf.find(s) == at)
            return buf[:at], True
        # Text already sent cannot hold the start of a stop sequence: it was held back here.
        keep = 0 if final else _held_prefix(buf, self._stop)
        self._stop_buf = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def _within_limit(self, text: str) -> tuple[str, bool]:
        """The longest beginning of ``text`` within the token limit, and whether it was cut."""
        ascii_chars = sum(1 for ch in text if ch < "\x80") if not text.isascii() else len(text)
        other = len(text) - ascii_chars
        limit = self._max_tokens
        if limit is None or tokens_for(self._ascii + ascii_chars, self._other + other) <= limit:
            self._ascii += ascii_chars
            self._other += other
            return text, False
        for i, ch in enumerate(text):
            a, o = (self._ascii + 1, self._other) if ch < "\x80" else (self._ascii, self._other + 1)
            if tokens_for(a, o) > limit:
                return text[:i], True
            self._ascii, self._other = a, o
        raise AssertionError("unreachable: the whole text was over the limit")
