"""The Messages dialect's parser and encoder, in process (no server): blocks to turns,
tool choices, refusals, and the encoded events replayed through the anthropic SDK's own
accumulator (the tool-call paths fed engine events directly)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from api.dialects.messages.encode import MessageStreamEncoder, message
from api.dialects.messages.errors import error_body
from api.dialects.messages.parse import parse_count_tokens, parse_messages
from api.engine.events import Answer, Usage
from shared.errors import InvalidRequest, ModelNotFound, RateLimited, ServiceUnavailable
from shared.models import ModelTable
from shared.settings import Settings

SETTINGS = Settings()
MODELS = ModelTable(SETTINGS.decopy_models, {"claude-*": "decopy-deepseek-v3", "claude-exact": "decopy-gpt-4o-mini"})


def _body(**kw: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **kw}


def test_blocks_become_turns_in_order() -> None:
    call, thinking = parse_messages(
        _body(
            system=[{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "read a.txt"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hidden", "signature": "s"},
                        {"type": "text", "text": "Reading."},
                        {"type": "tool_use", "id": "toolu_9", "name": "read", "input": {"path": "a.txt"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_9", "content": "forty-two", "is_error": True},
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
        ),
        SETTINGS,
        MODELS,
    )
    assert thinking and call.dialect == "messages" and call.model == "decopy-deepseek-v3"
    assert call.turns == [
        {"role": "system", "text": "Be kind."},
        {"role": "user", "text": "read a.txt"},
        {
            "role": "assistant",
            "text": "Reading.",
            "tool_calls": [{"id": "toolu_9", "name": "read", "arguments": '{"path":"a.txt"}'}],
        },
        {"role": "tool", "text": "forty-two", "tool_call_id": "toolu_9", "is_error": True},
        {"role": "user", "text": "and?"},
    ]
    assert call.max_tokens == 64 and "hidden" not in call.prompt


def test_tools_and_choices() -> None:
    tools = [
        {"name": "read", "description": "Read a file", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},  # a server tool: left out
    ]
    call, _ = parse_messages(
        _body(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}), SETTINGS, MODELS
    )
    assert call.tools == [{"name": "read", "description": "Read a file", "parameters": {"type": "object"}}]
    assert call.tool_choice == "required" and call.parallel_tool_calls is False
    named, _ = parse_messages(_body(tools=tools, tool_choice={"type": "tool", "name": "read"}), SETTINGS, MODELS)
    assert named.tool_choice == {"name": "read"}
    none, _ = parse_messages(_body(tools=tools, tool_choice={"type": "none"}), SETTINGS, MODELS)
    assert none.tool_choice == "none"
    with pytest.raises(InvalidRequest) as unknown:
        parse_messages(_body(tools=tools, tool_choice={"type": "tool", "name": "write"}), SETTINGS, MODELS)
    assert unknown.value.param == "tool_choice"
    with pytest.raises(InvalidRequest) as schema:
        parse_messages(_body(tools=[{"name": "x", "input_schema": {"type": 7}}]), SETTINGS, MODELS)
    assert schema.value.param == "tools[0].input_schema"
    with pytest.raises(InvalidRequest) as duplicate:
        parse_messages(_body(tools=[tools[0], tools[0]]), SETTINGS, MODELS)
    assert duplicate.value.param == "tools"


def test_refusals_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as no_max:
        parse_messages({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}, SETTINGS, MODELS)
    assert no_max.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as block:
        parse_messages(_body(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}]), SETTINGS, MODELS)
    assert block.value.param == "messages[0].content[0]" and "'tool_result'" in block.value.message
    with pytest.raises(InvalidRequest) as stops:
        parse_messages(_body(stop_sequences=[str(i) for i in range(17)]), SETTINGS, MODELS)
    assert stops.value.param == "stop_sequences"
    with pytest.raises(ModelNotFound):
        parse_messages(_body(model="gpt-4o"), SETTINGS, MODELS)


def test_exact_alias_beats_the_pattern_and_disabled_thinking() -> None:
    call, thinking = parse_messages(_body(model="claude-exact", thinking={"type": "disabled"}), SETTINGS, MODELS)
    assert call.model == "decopy-gpt-4o-mini" and thinking is False
    assert MODELS.resolve("CLAUDE-opus-4") is not None  # patterns match case-insensitively too


def test_images_base64_and_url() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]
    call, _ = parse_messages(_body(messages=[{"role": "user", "content": blocks}]), SETTINGS, MODELS)
    assert call.image is not None and call.image["content_type"] == "image/png"
    url = [
        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
        {"type": "text", "text": "?"},
    ]
    call, _ = parse_messages(_body(messages=[{"role": "user", "content": url}]), SETTINGS, MODELS)
    assert call.image_url == "https://example.test/a.png" and call.image_param == "messages[0].content[0].source"


def test_count_tokens_needs_no_max_tokens() -> None:
    call = parse_count_tokens(
        {"model": "claude-x", "messages": [{"role": "user", "content": "hello there"}]}, SETTINGS, MODELS
    )
    assert call.prompt_tokens == 3


def _replay(raw: bytes) -> Any:
    """Run the encoded stream through the anthropic SDK's accumulator; the final message."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    names = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        names.append(name)
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=json.loads(data), current_snapshot=snapshot, json_bufs=bufs)
    return snapshot, names


def test_stream_with_thinking_text_and_tool_calls_replays_in_the_sdk() -> None:
    enc = MessageStreamEncoder("msg_1", "decopy-deepseek-r1", 11, thinking=True)
    raw = enc.open() + enc.ping() + enc.reasoning("Think") + enc.reasoning("ing.") + enc.content("I will ")
    raw += enc.content("read.") + enc.tool_call({"id": "call_ab", "name": "read", "arguments": '{"path": "a"}'})
    raw += enc.tool_call({"id": "call_cd", "name": "list", "arguments": ""})
    raw += enc.finish("tool_calls", Usage(11, 7))
    final, names = _replay(raw)
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[0].thinking == "Thinking." and final.content[1].text == "I will read."
    assert (final.content[2].id, final.content[2].name, final.content[2].input) == ("toolu_ab", "read", {"path": "a"})
    assert final.content[3].input == {} and final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 7
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 4


def test_stream_stop_sequence_and_hidden_reasoning() -> None:
    enc = MessageStreamEncoder("msg_2", "m", 1, thinking=False)
    raw = enc.open() + enc.reasoning("not shown") + enc.content("cut") + enc.finish("stop", Usage(1, 1), "###")
    final, _ = _replay(raw)
    assert [b.type for b in final.content] == ["text"]
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "###"


def test_whole_message() -> None:
    answer = Answer(
        content="",
        reasoning="why",
        finish="tool_calls",
        usage=Usage(5, 6),
        tool_calls=[{"id": "call_1", "name": "f", "arguments": '{"a": 1}'}],
    )
    body = message(answer, message_id="msg_x", model="m", thinking=True)
    assert body["content"] == [
        {"type": "thinking", "thinking": "why", "signature": ""},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
    ]
    assert body["stop_reason"] == "tool_use" and body["usage"]["output_tokens"] == 6
    cut = message(Answer("abc", "", "length", Usage(1, 1)), message_id="msg_y", model="m", thinking=True)
    assert cut["stop_reason"] == "max_tokens" and cut["content"] == [{"type": "text", "text": "abc"}]


def test_error_shapes() -> None:
    assert error_body(RateLimited("slow down")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert error_body(ServiceUnavailable("busy"))["error"]["type"] == "overloaded_error"
    assert error_body(InvalidRequest("bad", param="max_tokens"))["error"]["message"] == "max_tokens: bad"
    enc = MessageStreamEncoder("msg_3", "m", 1, thinking=False)
    assert enc.error(RateLimited("x")).startswith(b"event: error\ndata: {")


def test_what_claude_code_sends() -> None:
    """The fields Claude Code 2.1 sends beyond the public API (see the agents' capture): a system
    turn inside ``messages``, adaptive thinking, context management, an output config."""
    body = {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": True,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>r</system-reminder>"}]},
            {"role": "system", "content": "environment: linux"},
            {"role": "user", "content": [{"type": "text", "text": "read notes.txt"}]},
        ],
        "tools": [{"name": "Read", "description": "Read", "input_schema": {"type": "object"}, "defer_loading": True}],
        "metadata": {"user_id": '{"session": "s"}'},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
    }
    call, thinking = parse_messages(body, SETTINGS, MODELS)
    assert [t["role"] for t in call.turns] == ["system", "user", "system", "user"]
    assert call.model == "decopy-deepseek-v3" and call.stream and len(call.tools) == 1
    assert not thinking  # display "omitted": no thinking blocks


def test_an_empty_answer_is_one_empty_text_block() -> None:
    enc = MessageStreamEncoder("msg_4", "m", 1, thinking=False)
    final, _ = _replay(enc.open() + enc.finish("stop", Usage(1, 0), "STOP"))
    assert [(b.type, b.text) for b in final.content] == [("text", "")] and final.stop_sequence == "STOP"
    whole = message(Answer("", "", "stop", Usage(1, 0)), message_id="m", model="m", thinking=False)
    assert whole["content"] == [{"type": "text", "text": ""}]
