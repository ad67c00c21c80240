"""The shaper's path for a token limit alone (Anthropic's ``max_tokens`` is always set)
gives exactly what the general path gives, for every limit and any split of the text."""

from __future__ import annotations

import random

from api.engine.shaping import Shaped, Shaper


def _run(shaper: Shaper, pieces: list[str]) -> tuple[list[tuple[str, str]], str | None, int]:
    out: list[tuple[str, str]] = []
    finish = None
    for piece in [*pieces, None]:
        shaped: Shaped = shaper.feed(piece) if piece is not None else shaper.end()
        out.extend(shaped.pieces)
        finish = finish or shaped.finish
        if shaped.finish:
            break
    return out, finish, shaper.tokens


def test_limit_only_matches_the_general_path() -> None:
    rng = random.Random(7)
    text = "Hello there, this is an answer — with ünïcödé and 中文 in it, long enough to be cut. " * 3
    for limit in (1, 2, 5, 17, 40, 10_000):
        for _ in range(20):
            cuts = sorted(rng.sample(range(1, len(text)), 12))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            fast = _run(Shaper(max_tokens=limit), pieces)
            general = _run(Shaper(max_tokens=limit, stop=["\x00never"]), pieces)  # a stop: the general path
            joined = ("".join(t for _, t in fast[0]), fast[1], fast[2])
            assert joined == ("".join(t for _, t in general[0]), general[1], general[2]), limit
