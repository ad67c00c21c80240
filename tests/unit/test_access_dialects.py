"""The access log reads every dialect: its dialect by path, and with LOG_PROMPTS the
conversation and the answer of each dialect's request and response shapes."""

from __future__ import annotations

import orjson

from api.http.access import _answer_of, _prompt_of, dialect_of


def test_dialect_by_path() -> None:
    assert dialect_of("/v1/chat/completions") == "chat"
    assert dialect_of("/v1/messages/count_tokens") == "messages"
    assert dialect_of("/v1/responses/resp_1/input_items") == "responses"
    assert dialect_of("/v1/completions") == "completions"
    assert dialect_of("/v1/models") is None and dialect_of("/v1/messagesx") is None


def test_prompts_of_each_dialect() -> None:
    anthropic = {"system": "Be kind.", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert _prompt_of(orjson.dumps(anthropic)) == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
    ]
    responses = {
        "instructions": "I",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}, {"type": "input_image"}]},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ],
    }
    assert _prompt_of(orjson.dumps(responses)) == [
        {"role": "system", "content": "I"},
        {"role": "user", "content": "q\n<input_image>"},
        {"role": "function_call_output", "content": "42"},
    ]
    assert _prompt_of(orjson.dumps({"input": "plain"})) == [{"role": "user", "content": "plain"}]
    assert _prompt_of(orjson.dumps({"prompt": "Once"})) == [{"role": "user", "content": "Once"}]


def test_answers_of_each_dialect() -> None:
    message = {"type": "message", "content": [{"type": "thinking", "thinking": "x"}, {"type": "text", "text": "A"}]}
    assert _answer_of(orjson.dumps(message), sse=False) == "A"
    response = {
        "object": "response",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "B"}]}],
    }
    assert _answer_of(orjson.dumps(response), sse=False) == "B"
    completion = {"choices": [{"text": "C", "index": 0}]}
    assert _answer_of(orjson.dumps(completion), sse=False) == "C"
    stream = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"D"}}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"E"}\n\n'
        b'data: {"choices":[{"text":"F","index":0}]}\n\ndata: [DONE]\n\n'
    )
    assert _answer_of(stream, sse=True) == "DEF"
