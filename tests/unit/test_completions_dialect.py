"""The legacy completions parser and chunk encoder, in process."""

from __future__ import annotations

import json

import pytest

from api.dialects.completions.encode import CompletionChunkEncoder, whole
from api.dialects.completions.parse import parse_completion
from api.engine.events import Answer, Usage
from shared.errors import InvalidRequest, Unsupported
from shared.models import ModelTable
from shared.settings import Settings

MODELS = ModelTable(Settings().decopy_models)


def test_prompt_is_one_user_turn() -> None:
    call = parse_completion({"model": "decopy-deepseek-v3", "prompt": ["Say hi"], "stop": "\n\n"}, MODELS)
    assert call.turns == [{"role": "user", "text": "Say hi"}] and call.prompt == "Say hi"
    assert call.stop == ["\n\n"] and call.max_tokens is None and call.dialect == "completions"
    assert parse_completion({"model": "decopy-deepseek-v3", "prompt": "x", "best_of": 1, "echo": False}, MODELS)


@pytest.mark.parametrize(
    ("field", "value"), [("suffix", "s"), ("echo", True), ("logprobs", 0), ("best_of", 2), ("prompt", [])]
)
def test_refusals(field: str, value: object) -> None:
    with pytest.raises(Unsupported) as refused:
        parse_completion({"model": "decopy-deepseek-v3", "prompt": "x", field: value}, MODELS)
    assert refused.value.param == field


def test_bad_bodies() -> None:
    with pytest.raises(InvalidRequest) as empty:
        parse_completion({"model": "decopy-deepseek-v3", "prompt": "  "}, MODELS)
    assert empty.value.param == "prompt"
    with pytest.raises(InvalidRequest) as typed:
        parse_completion({"model": "decopy-deepseek-v3", "prompt": 3}, MODELS)
    assert typed.value.param == "prompt"


def test_chunks_and_whole() -> None:
    enc = CompletionChunkEncoder("m", include_usage=True)
    raw = (
        enc.open() + enc.reasoning("hidden") + enc.content("a") + enc.content('"b"') + enc.finish("length", Usage(3, 2))
    )
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["text"] for c in chunks[:2]] == ["a", '"b"']
    assert chunks[2]["choices"][0]["finish_reason"] == "length" and chunks[3]["usage"]["total_tokens"] == 5
    assert all(c["object"] == "text_completion" and c["id"] == enc.id for c in chunks)
    body = whole(Answer("text", "why", "stop", Usage(1, 1)), model="m")
    assert body["choices"][0]["text"] == "text" and body["object"] == "text_completion"
