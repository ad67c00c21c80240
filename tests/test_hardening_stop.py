"""Stop sequences cannot freeze the API: their length is bounded and the search is linear.

Before: one 400 KB upstream piece against four 400 KB stop sequences held the whole API for
seconds (the held-back check grew with the square of the length). Now a stop sequence over
``MAX_STOP_CHARS`` is a 400, and the work per delta does not grow with the text.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import openai
import pytest

from api.engine import shaping
from api.engine.shaping import MAX_STOP_CHARS, Shaper, _held_prefix
from tests.conftest import Gateway


def reference(text: str, needles: Sequence[str]) -> int:
    """The definition, checked the slow way."""
    return max(
        (k for n in needles for k in range(1, min(len(n) - 1, len(text)) + 1) if text.endswith(n[:k])), default=0
    )


def test_the_held_back_end_is_what_the_definition_says() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        needles = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 4))]
        assert _held_prefix(text, needles) == reference(text, needles), (text, needles)


def python_steps(fn: Any, *args: Any) -> int:
    """How many lines of shaping.py run for ``fn(*args)``: work, counted without a clock."""
    steps = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal steps
        if frame.f_code.co_filename == shaping.__file__:
            if event == "line":
                steps += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return steps


def test_the_work_per_delta_does_not_grow_with_the_text() -> None:
    stops = ["a" * (MAX_STOP_CHARS - 1) + c for c in "bcde"]  # the worst case: every 'a' a candidate

    def feed(size: int) -> None:
        shaper = Shaper(stop=stops)
        shaper.feed("a" * size)
        shaper.feed("a" * size)

    small, large = python_steps(feed, 4_000), python_steps(feed, 400_000)
    assert large == small


def test_a_stop_sequence_over_the_bound_is_a_400(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="decopy-deepseek-v3",
            messages=[{"role": "user", "content": "hi"}],
            stop=["x" * 400_000, "y" * 400_000, "z" * 400_000, "w" * 400_000],
        )
    assert exc.value.body["param"] == "stop"  # type: ignore[index]
    ok = client.chat.completions.create(
        model="decopy-deepseek-v3", messages=[{"role": "user", "content": "hi"}], stop=["q" * MAX_STOP_CHARS]
    )
    assert ok.choices[0].message.content
