"""The chat dialect's side of tool calling, without processes: the request parsed into the engine's
ChatCall (tools, tool_choice, parallel_tool_calls, response_format, earlier calls and results), the
settings that switch and cap the emulation, and the stream chunks and whole answer of a call."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from api.dialects.chat.encode import ARGUMENTS_PIECE, ChunkEncoder, whole
from api.dialects.chat.parse import parse_chat
from api.engine.call import ChatCall
from api.engine.events import Answer, Usage
from shared.errors import InvalidRequest, Unsupported
from shared.models import ModelTable
from shared.settings import DEFAULT_MODELS, Settings

SETTINGS = Settings()
MODELS = ModelTable(DEFAULT_MODELS)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def parse(settings: Settings = SETTINGS, **fields: Any) -> ChatCall:
    body = {"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat(body, settings, MODELS)


def test_plain_request_is_not_emulated() -> None:
    call = parse(tool_choice="none", parallel_tool_calls=False, response_format={"type": "text"})
    assert not call.emulated and call.prompt == "hi" and "tools" not in call.job("r")


def test_tools_and_choices_parsed() -> None:
    call = parse(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert call.tools == [
        {"name": "get_weather", "description": "Weather.", "parameters": WEATHER["function"]["parameters"]}  # type: ignore[index]
    ]
    assert call.tool_choice == {"name": "get_weather"} and call.parallel_tool_calls is True
    job = call.job("r")
    assert job["tools"] == call.tools and job["tool_choice"] == {"name": "get_weather"}
    assert call.prompt.startswith("Tools: ") and call.prompt.endswith("User: hi")
    assert parse(tools=[WEATHER], parallel_tool_calls=False).parallel_tool_calls is False
    no_params = parse(tools=[{"type": "function", "function": {"name": "ping"}}])
    assert no_params.tools[0]["parameters"] == {"type": "object", "properties": {}}


def test_earlier_calls_and_results_become_turns() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"x"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sunny"}]},
    ]
    call = parse(messages=messages, tools=[WEATHER])
    assert call.turns[1] == {
        "role": "assistant",
        "text": "",
        "tool_calls": [{"id": "call_a", "name": "get_weather", "arguments": '{"city":"x"}'}],
    }
    assert call.turns[2] == {"role": "tool", "text": "sunny", "tool_call_id": "call_a"}
    assert call.prompt.endswith("Tool (call_a, get_weather): sunny")


def test_response_formats() -> None:
    assert parse(response_format={"type": "json_object"}).output == {
        "type": "json_object",
        "name": None,
        "schema": None,
        "strict": False,
    }
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    call = parse(
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    )
    assert call.output == {"type": "json_schema", "name": "n", "schema": schema, "strict": True}
    assert call.prompt.endswith(
        'It must be valid against this JSON Schema: {"type":"object","properties":{"n":{"type":"integer"}}}'
    )


def test_emulation_off_refuses_tools_and_json() -> None:
    off = Settings(tools_emulation=False)
    with pytest.raises(Unsupported) as exc:
        parse(off, tools=[WEATHER])
    assert exc.value.param == "tools" and "TOOLS_EMULATION" in exc.value.message
    with pytest.raises(Unsupported) as exc:
        parse(off, response_format={"type": "json_object"})
    assert exc.value.param == "response_format"
    assert parse(off).prompt == "hi"


def test_prompt_cap() -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse(Settings(tools_prompt_max_chars=100), tools=[WEATHER])
    assert exc.value.code == "prompt_too_large" and "100" in exc.value.message


def test_custom_instruction_is_folded() -> None:
    settings = Settings(tools_instruction="Call tools as <tool_call>{...}</tool_call> only.")
    assert parse(settings, tools=[WEATHER]).prompt.startswith("Tools: Call tools as <tool_call>{...}</tool_call> only.")


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        {"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "nope"}}}]},
        {"tools": [WEATHER], "tool_choice": "sometimes"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minimum": "low"}}}},
    ],
)
def test_bad_tool_fields_are_invalid_requests(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse(**fields)


# --- encoding ---------------------------------------------------------------------------------


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]


def test_stream_chunks_of_calls() -> None:
    enc = ChunkEncoder("chatcmpl-1", "m")
    long_args = json.dumps({"text": "y" * (ARGUMENTS_PIECE * 2)})
    out = enc.tool_call({"id": "call_1", "name": "get_weather", "arguments": '{"city":"x"}'})
    out += enc.tool_call({"id": "call_2", "name": "write", "arguments": long_args})
    out += enc.finish("tool_calls", Usage(1, 2))
    got = chunks(out)
    deltas = [c["choices"][0]["delta"] for c in got if c["choices"] and c["choices"][0]["delta"]]
    assert deltas[0]["role"] == "assistant"
    first, second = deltas[0]["tool_calls"][0], deltas[1]["tool_calls"][0]
    assert first == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"x"}'},
    }
    assert second["index"] == 1 and second["id"] == "call_2" and second["function"]["name"] == "write"
    rest = [d["tool_calls"][0] for d in deltas[2:]]
    assert all(set(r) == {"index", "function"} and r["index"] == 1 for r in rest)
    pieces = [second["function"]["arguments"]] + [r["function"]["arguments"] for r in rest]
    assert "".join(pieces) == long_args and all(0 < len(p) <= ARGUMENTS_PIECE for p in pieces)
    assert got[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_whole_answer_with_calls() -> None:
    call = {"id": "call_1", "name": "f", "arguments": "{}"}
    body = whole(Answer("", "", "tool_calls", Usage(1, 1), [call]), model="m", reasoning=False)  # type: ignore[list-item]
    message = body["choices"][0]["message"]
    assert message["content"] is None and body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = whole(Answer("Hi.", "", "tool_calls", Usage(1, 1), [call]), model="m", reasoning=False)  # type: ignore[list-item]
    assert body["choices"][0]["message"]["content"] == "Hi."
