"""No answer text is lost in silence: malformed upstream streams sent for real by the simulator's
``raw`` directive, read by a real worker, answered through the API to the OpenAI SDK.

Before: a piece with a lone surrogate, half an emoji or half a UTF-8 sequence was dropped whole
with a WARNING and the answer still ended with ``finish_reason: "stop"``.
"""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Gateway, directive

MODEL = "decopy-deepseek-v3"


def raw_event(payload: bytes) -> str:
    """One SSE event as the ``raw`` directive carries it (one char per byte)."""
    return (b"data: " + payload + b"\n\n").decode("latin-1")


def escaped(piece: str) -> str:
    return raw_event(json.dumps({"data": piece}).encode())


def ask(gateway: Gateway, tag: str, writes: list[str], *, stream: bool) -> tuple[str, str | None]:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"{tag}\n" + directive(raw=writes)}]
    client = gateway.client()
    if not stream:
        done = client.chat.completions.create(model=MODEL, messages=messages)
        return done.choices[0].message.content or "", done.choices[0].finish_reason
    text, finish = "", None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


CASES = {
    "lone surrogate": ([escaped("ok1 "), escaped("bad\ud800bad"), escaped(" ok2")], "ok1 bad\ufffdbad ok2"),
    "split surrogate pair": ([escaped("smile \ud83d"), escaped("\ude00 done")], "smile \U0001f600 done"),
    "utf-8 split across events": (
        [raw_event(b'{"data":"caf\xc3"}'), raw_event(b'{"data":"\xa9"}')],
        "café",
    ),
    "utf-8 split across reads": (
        [raw_event('{"data":"café"}'.encode())[:16], raw_event('{"data":"café"}'.encode())[16:]],
        "café",
    ),
    "invalid and overlong utf-8": ([raw_event(b'{"data":"a\xffb\xc0\xafc"}')], "a\ufffdb\ufffd\ufffdc"),
    "raw control characters": ([raw_event(b'{"data":"tab\there\x01"}')], "tab\there\x01"),
    "bom before the first event": (["\u00ef\u00bb\u00bf" + escaped("after a bom")], "after a bom"),
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_text_arrives_mended(gateway: Gateway, tag: str, case: str, stream: bool) -> None:
    writes, expected = CASES[case]
    assert ask(gateway, tag, writes, stream=stream) == (expected, "stop")


def test_an_unreadable_answer_piece_fails_the_answer_after_text_began(gateway: Gateway, tag: str) -> None:
    writes = [escaped("first "), raw_event(b'{"data": "cut short'), escaped(" never")]
    with pytest.raises(openai.APIError) as exc:
        ask(gateway, tag, writes, stream=True)
    assert "could not be read" in str(exc.value)


def test_an_unreadable_answer_piece_fails_a_whole_answer_with_an_upstream_error(gateway: Gateway, tag: str) -> None:
    writes = [escaped("first "), raw_event(b'{"data": "cut short')]
    with pytest.raises(openai.APIStatusError) as exc:
        ask(gateway, tag, writes, stream=False)
    assert exc.value.status_code == 502 and "could not be read" in exc.value.message
