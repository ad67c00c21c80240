"""api.engine.shaping.Shaper on its own: stop sequences, token limit, <think> split, across any split.

The end-to-end tests (test_compat.py) show the same through the running gateway; here every way
of cutting an answer into deltas is tried, which only a unit test can afford.
"""

from __future__ import annotations

import itertools
import random

import pytest

from api.engine.shaping import Shaper
from shared.tokens import estimate_tokens


def run(pieces: list[str], **kw: object) -> tuple[str, str, str | None, int]:
    """(reasoning, content, finish, tokens); finish None: the upstream ended the answer."""
    shaper = Shaper(**kw)  # type: ignore[arg-type]
    out = {"reasoning": "", "content": ""}
    finish = None
    for piece in pieces:
        shaped = shaper.feed(piece)
        for kind, text in shaped.pieces:
            out[kind] += text
        if shaped.finish:
            finish = shaped.finish
            assert shaper.feed("more text").pieces == []  # nothing after the end
            break
    else:
        shaped = shaper.end()
        for kind, text in shaped.pieces:
            out[kind] += text
        finish = shaped.finish
    return out["reasoning"], out["content"], finish, shaper.tokens


def splits(text: str, cuts: int) -> list[list[str]]:
    """Every way to cut ``text`` into ``cuts + 1`` pieces (empty pieces included)."""
    result = []
    for points in itertools.combinations_with_replacement(range(len(text) + 1), cuts):
        bounds = [0, *points, len(text)]
        result.append([text[a:b] for a, b in zip(bounds, bounds[1:])])
    return result


def test_no_shaping_passes_text_through() -> None:
    assert run(["Hel", "lo ", "<think>x</think>"]) == ("", "Hello <think>x</think>", None, 6)


@pytest.mark.parametrize("text", ["Hello STOP there", "Hello ST", "STOP at once", "no stop at all", "SSTOP", "STSTOP"])
def test_stop_sequence_cut_the_same_however_split(text: str) -> None:
    expected_content = text.split("STOP")[0]
    expected_finish = "stop" if "STOP" in text else None
    for pieces in splits(text, 2):
        _, content, finish, _ = run(pieces, stop=["STOP"])
        assert (content, finish) == (expected_content, expected_finish), pieces


def test_earliest_of_several_stop_sequences_wins() -> None:
    text = "one two three four"
    for pieces in splits(text, 2):
        assert run(pieces, stop=["four", "o t", "three"])[1:3] == ("one tw", "stop")


def test_held_back_text_is_only_what_could_start_a_stop() -> None:
    shaper = Shaper(stop=["END"])
    assert shaper.feed("abc E").pieces == [("content", "abc ")]  # "E" might begin "END"
    assert shaper.feed("x").pieces == [("content", "Ex")]  # it did not
    assert shaper.feed("EN").pieces == []
    assert shaper.end().pieces == [("content", "EN")]  # flushed at the end


def test_token_limit_cuts_at_the_estimate() -> None:
    reasoning, content, finish, tokens = run(["abcd" * 3, "efgh" * 3], max_tokens=5)
    assert (content, finish, tokens) == ("abcd" * 3 + "efgh" * 2, "length", 5)
    assert estimate_tokens(content) == 5
    # CJK: one token per character
    assert run(["中文", "回答问题"], max_tokens=3)[1:] == ("中文回", "length", 3)
    # an answer that fits ends normally
    assert run(["abcd"], max_tokens=1) == ("", "abcd", None, 1)


def test_think_split_the_same_however_split() -> None:
    text = "<think>\nLet me think.</think>\n\nThe answer."
    for pieces in splits(text, 2):
        assert run(pieces, reasoning=True) == ("Let me think.", "The answer.", None, 6), pieces


def test_think_only_at_the_start() -> None:
    assert run(["Sure: <think>x</think> y"], reasoning=True)[:2] == ("", "Sure: <think>x</think> y")
    assert run(["  <thi", "nk>a</think>b"], reasoning=True)[:2] == ("a", "b")
    assert run(["<thin"], reasoning=True)[:2] == ("", "<thin")  # never became a tag
    assert run(["<think>cut short"], reasoning=True)[:2] == ("cut short", "")  # no closing tag


def test_stop_applies_to_content_not_reasoning() -> None:
    assert run(["<think>say STOP</think>ok STOP no"], reasoning=True, stop=["STOP"])[:3] == ("say STOP", "ok ", "stop")


def test_token_limit_counts_reasoning_and_content() -> None:
    reasoning, content, finish, tokens = run(["<think>abcdefgh</think>", "ijklmnop"], reasoning=True, max_tokens=3)
    assert (reasoning, content, finish, tokens) == ("abcdefgh", "ijkl", "length", 3)


def test_random_splits_match_one_piece() -> None:
    rng = random.Random(7)
    words = ["<think>", "</think>", "STOP", "ST", "OP", "中", "a", " ", "\n", "<", ">", "think"]
    for _ in range(300):
        text = "".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        kw = {
            "reasoning": rng.random() < 0.5,
            "stop": rng.choice([[], ["STOP"], ["OP", "</"]]),
            "max_tokens": rng.choice([None, 1, 3, 8]),
        }
        whole = run([text], **kw)
        cut = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(1, 4)))
        pieces = [text[a:b] for a, b in zip([0, *cut], [*cut, len(text)])]
        assert run(pieces, **kw) == whole, (text, pieces, kw)
