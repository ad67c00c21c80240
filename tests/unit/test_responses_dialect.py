"""The Responses dialect's parser and encoder, in process (no server): items to turns,
tools and choices, output formats, refusals, and the encoded events replayed through the openai
SDK's own stream accumulator (the tool-call paths fed engine events directly)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import omit
from openai._models import construct_type_unchecked
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from api.dialects.responses.dialect import ResponsesDialect
from api.dialects.responses.encode import ResponseStreamEncoder, whole
from api.dialects.responses.parse import parse_responses, read_request
from api.engine.events import Answer, Usage
from shared.errors import InvalidRequest, Unsupported, UpstreamError
from shared.models import ModelTable
from shared.settings import Settings

SETTINGS = Settings()
MODELS = ModelTable(SETTINGS.decopy_models, {"gpt-*": "decopy-gpt-4o-mini"})


def _parse(**kw: Any) -> Any:
    body = {"model": "gpt-5-codex", "input": "hi", **kw}
    return parse_responses(read_request(body), SETTINGS, MODELS)


def test_items_become_turns() -> None:
    parsed = _parse(
        instructions="You are Codex.",
        input=[
            {"role": "developer", "content": "Use the shell."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": '{"cmd":"ls"}'},
            {"type": "function_call", "call_id": "call_2", "name": "shell", "arguments": '{"cmd":"pwd"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "/w"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Two files."}]},
        ],
    )
    call = parsed.call
    assert call.dialect == "responses" and call.model == "decopy-gpt-4o-mini"
    assert call.turns == [
        {"role": "system", "text": "You are Codex."},
        {"role": "system", "text": "Use the shell."},
        {"role": "user", "text": "list files"},
        {
            "role": "assistant",
            "text": "",
            "tool_calls": [
                {"id": "call_1", "name": "shell", "arguments": '{"cmd":"ls"}'},
                {"id": "call_2", "name": "shell", "arguments": '{"cmd":"pwd"}'},
            ],
        },
        {"role": "tool", "text": "a.txt", "tool_call_id": "call_1"},
        {"role": "tool", "text": "/w", "tool_call_id": "call_2"},
        {"role": "assistant", "text": "Two files."},
    ]
    assert parsed.turns == call.turns[1:]  # what a continuation replays: never the instructions
    assert parsed.store and len(parsed.items) == 8


def test_history_goes_between_instructions_and_input() -> None:
    history = [{"role": "user", "text": "before"}, {"role": "assistant", "text": "ok"}]
    parsed = parse_responses(
        read_request({"model": "gpt-x", "input": "after", "instructions": "I"}),
        SETTINGS,
        MODELS,
        history,  # type: ignore[arg-type]
    )
    assert [t["text"] for t in parsed.call.turns] == ["I", "before", "ok", "after"]


def test_tools_choices_and_formats() -> None:
    tools = [
        {"type": "function", "name": "shell", "description": "Run", "parameters": {"type": "object"}},
        {"type": "web_search"},  # hosted: left out
    ]
    parsed = _parse(tools=tools, tool_choice={"type": "function", "name": "shell"}, parallel_tool_calls=False)
    assert parsed.call.tools == [{"name": "shell", "description": "Run", "parameters": {"type": "object"}}]
    assert parsed.call.tool_choice == {"name": "shell"} and parsed.call.parallel_tool_calls is False
    assert _parse(tools=tools, tool_choice="required").call.tool_choice == "required"
    fmt = {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}}
    assert _parse(text=fmt).call.output == {
        "type": "json_schema",
        "name": "x",
        "schema": {"type": "object"},
        "strict": True,
    }
    assert _parse(text={"format": {"type": "text"}}).call.output is None
    with pytest.raises(InvalidRequest) as unknown:
        _parse(tools=tools, tool_choice={"type": "function", "name": "edit"})
    assert unknown.value.param == "tool_choice"
    with pytest.raises(Unsupported):
        _parse(tool_choice={"type": "web_search"})
    with pytest.raises(InvalidRequest) as schema:
        _parse(tools=[{"type": "function", "name": "f", "parameters": {"type": "nope"}}])
    assert schema.value.param == "tools[0].parameters"
    with pytest.raises(InvalidRequest) as output:
        _parse(text={"format": {"type": "json_schema", "name": "x", "schema": {"required": 3}}})
    assert output.value.param == "text.format.schema"


def test_refusals() -> None:
    with pytest.raises(Unsupported) as background:
        read_request({"model": "m", "input": "x", "background": True})
    assert background.value.param == "background"
    with pytest.raises(InvalidRequest) as item:
        read_request({"model": "m", "input": [{"type": "computer_call_output"}]})
    assert item.value.param == "input[0]" and "'function_call_output'" in item.value.message
    with pytest.raises(InvalidRequest) as part:
        read_request({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]})
    assert part.value.param == "input[0].content[0]"
    with pytest.raises(InvalidRequest) as empty:
        _parse(input=[{"type": "reasoning", "summary": []}])
    assert empty.value.param == "input"


def test_images() -> None:
    parts = [{"type": "input_text", "text": "what?"}, {"type": "input_image", "image_url": "https://x.test/a.png"}]
    call = _parse(input=[{"role": "user", "content": parts}]).call
    assert call.image_url == "https://x.test/a.png" and call.image_param == "input[0].content[1].image_url"


def _replay(raw: bytes) -> tuple[Any, list[dict[str, Any]]]:
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    events = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append(data)
        state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=data))  # type: ignore[arg-type]
    return state, events


def _encoder(reasoning: bool = True) -> tuple[ResponseStreamEncoder, ResponsesDialect]:
    dialect = ResponsesDialect(_parse(stream=True))
    enc = dialect.stream_encoder(dialect.parsed.call)
    enc.reasoning_shown = reasoning
    return enc, dialect


def test_stream_with_reasoning_text_and_calls_replays_in_the_sdk() -> None:
    enc, dialect = _encoder()
    raw = enc.open() + enc.reasoning("Hm") + enc.reasoning("m.") + enc.content("Run") + enc.content("ning.")
    raw += enc.tool_call({"id": "call_a", "name": "shell", "arguments": '{"cmd": "ls"}'})
    raw += enc.tool_call({"id": "call_b", "name": "noargs", "arguments": ""})
    assert dialect.finished() is None  # nothing to store before the end
    raw += enc.finish("tool_calls", Usage(9, 4))
    _, events = _replay(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Running."
    assert final["output"][2]["call_id"] == "call_a" and final["output"][2]["arguments"] == '{"cmd": "ls"}'
    arg_deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert [d["delta"] for d in arg_deltas] == ['{"cmd": "ls"}']  # never an empty delta
    assert final["usage"]["total_tokens"] == 13
    done = dialect.finished()
    assert done is not None and done[1] == {
        "role": "assistant",
        "text": "Running.",
        "tool_calls": [
            {"id": "call_a", "name": "shell", "arguments": '{"cmd": "ls"}'},
            {"id": "call_b", "name": "noargs", "arguments": ""},
        ],
    }


def test_stream_ends_once_incomplete_or_failed() -> None:
    enc, _ = _encoder()
    state, events = _replay(enc.open() + enc.content("cut") + enc.finish("length", Usage(1, 2)))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    enc, dialect = _encoder()
    _, events = _replay(enc.open() + enc.content("half") + enc.error(UpstreamError("gone")))
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["message"] == "gone"
    assert (
        sum(
            e["type"].startswith("response.") and e["type"] in {"response.completed", "response.failed"} for e in events
        )
        == 1
    )
    enc, _ = _encoder()
    _, events = _replay(enc.open() + enc.finish("stop", Usage(1, 0)))  # an empty answer: one empty message
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_hidden_reasoning_and_whole() -> None:
    enc, _ = _encoder(reasoning=False)
    assert enc.reasoning("secret") == b""
    dialect = ResponsesDialect(_parse())
    body = whole(
        Answer("", "why", "tool_calls", Usage(2, 3), [{"id": "call_1", "name": "f", "arguments": "{}"}]),
        dialect.response,
        reasoning=True,
    )
    assert [o["type"] for o in body["output"]] == ["reasoning", "function_call"]
    assert body["status"] == "completed" and body["usage"]["output_tokens"] == 3


def test_what_codex_sends() -> None:
    """Codex CLI 0.171 (see the agents' capture): no instructions but developer messages with ids,
    a namespace of tools and a hosted web search (both left out), store false, extra fields."""
    parsed = _parse(
        stream=True,
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"summary": "auto"},
        prompt_cache_key="k",
        client_metadata={"a": "b"},
        tool_choice="auto",
        parallel_tool_calls=True,
        tools=[
            {"type": "function", "name": "exec_command", "parameters": {"type": "object"}, "strict": False},
            {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn"}]},
            {"type": "web_search", "external_web_access": False},
        ],
        input=[
            {"type": "message", "id": "msg_1", "role": "developer", "content": [{"type": "input_text", "text": "S"}]},
            {"type": "message", "id": "msg_2", "role": "user", "content": [{"type": "input_text", "text": "run"}]},
            {
                "type": "function_call",
                "id": "fc_1",
                "status": "completed",
                "name": "exec_command",
                "arguments": "{}",
                "call_id": "call_1",
            },
            {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "ok"},
        ],
    )
    assert not parsed.store and [t["name"] for t in parsed.call.tools] == ["exec_command"]
    assert [t["role"] for t in parsed.call.turns] == ["system", "user", "assistant", "tool"]
