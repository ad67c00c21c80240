"""Token estimates. decopy reports no usage, so the gateway estimates it.

Rule (documented in the README): about four characters of ASCII text per token, and one token
per other character (CJK ideographs, emoji and most non-Latin letters are about one token each
in the tokenizers of the models decopy serves). Never zero for non-empty text.
"""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    if text.isascii():
        return max(1, math.ceil(len(text) / 4))
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return max(1, math.ceil(ascii_chars / 4) + (len(text) - ascii_chars))
