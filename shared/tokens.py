"""Token estimates. decopy reports no usage, so the gateway estimates it.

Rule (documented in docs/api.md, "Token usage"): about four characters of ASCII text per token, and one token
per other character (CJK ideographs, emoji and most non-Latin letters are about one token each
in the tokenizers of the models decopy serves). Never zero for non-empty text.
"""

from __future__ import annotations

import math


def tokens_for(ascii_chars: int, other_chars: int) -> int:
    """The estimate for a text of ``ascii_chars`` ASCII and ``other_chars`` other characters.

    Split out so that :mod:`api.engine.shaping` can count a stream as it grows and cut it exactly at a
    token limit, with the same figure :func:`estimate_tokens` gives for the whole text.
    """
    if ascii_chars + other_chars == 0:
        return 0
    return max(1, math.ceil(ascii_chars / 4) + other_chars)


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    if text.isascii():
        return tokens_for(len(text), 0)
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return tokens_for(ascii_chars, len(text) - ascii_chars)
