"""The dialect parsers on the bodies real clients sent (tests/fixtures/clients/, captured from
Codex CLI, Claude Code, the Vercel AI SDK, the OpenAI Agents SDK, the openai npm package and the
anthropic Python SDK; docs/agent-clients.md says how). In process, no server: every captured body
parses, the user's prompt, the tools and the tool round trip land where the engine expects them,
and what the client adds of its own (Codex's developer messages and hosted tools, Claude Code's
mid-conversation system message, beta fields and cache_control) is folded or left out, never refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.dialects.messages.parse import parse_count_tokens, parse_messages
from api.dialects.responses.parse import parse_responses, read_request
from shared.models import ModelTable
from shared.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "clients"
SETTINGS = Settings()
# The ids the clients asked for, mapped as an operator would (Claude Code: by pattern).
MODELS = ModelTable(
    SETTINGS.decopy_models,
    {"claude-*": "decopy-deepseek-v3", "gpt-5-codex": "decopy-deepseek-v3"},
)


def body(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def test_the_index_describes_every_fixture() -> None:
    index = json.loads((FIXTURES / "index.json").read_text())
    files = {p.name for p in FIXTURES.glob("*.json")} - {"index.json"}
    assert set(index) == files
    for entry in index.values():
        assert entry["path"].split("?")[0] in ("/v1/responses", "/v1/messages", "/v1/messages/count_tokens")
        # Secrets were masked when captured.
        for name, value in entry["headers"].items():
            if name.lower() in ("authorization", "x-api-key"):
                assert "masked" in value


# --- Codex CLI ----------------------------------------------------------------------------------


def test_codex_first_turn() -> None:
    raw = body("codex_responses.json")
    parsed = parse_responses(read_request(raw), SETTINGS, MODELS)
    call = parsed.call
    assert call.model == "decopy-deepseek-v3" and call.stream is True and call.dialect == "responses"
    # Its function tools are offered; the hosted web_search and the namespace of sub-agent tools
    # are not function tools and are left out.
    functions = [t["name"] for t in raw["tools"] if t["type"] == "function"]
    assert [t["name"] for t in call.tools] == functions and "exec_command" in functions
    exec_command = next(t for t in call.tools if t["name"] == "exec_command")
    assert exec_command["parameters"]["required"] == ["cmd"]
    # The two developer messages are system turns; the user's prompt is the last turn.
    assert [t["role"] for t in call.turns] == ["system", "system", "user", "user"]
    assert call.turns[-1]["text"].startswith("Run `echo tool-ran-ok`")
    assert raw["input"][-1]["content"][0]["text"] in call.prompt
    assert parsed.store is False  # Codex sends store: false: nothing kept


def test_codex_tool_round_trip() -> None:
    raw = body("codex_responses_tool_output.json")
    call = parse_responses(read_request(raw), SETTINGS, MODELS).call
    function_call = next(i for i in raw["input"] if i.get("type") == "function_call")
    assistant, tool = call.turns[-2], call.turns[-1]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"] == [
        {"id": function_call["call_id"], "name": "exec_command", "arguments": function_call["arguments"]}
    ]
    assert tool["role"] == "tool" and tool["tool_call_id"] == function_call["call_id"]
    assert "tool-ran-ok" in tool["text"]
    assert "tool-ran-ok" in call.prompt


# --- Claude Code --------------------------------------------------------------------------------


def test_claude_code_first_turn() -> None:
    raw = body("claude_code_messages.json")
    call, _thinking = parse_messages(raw, SETTINGS, MODELS)
    assert call.model == "decopy-deepseek-v3" and call.stream is True and call.dialect == "messages"
    assert [t["name"] for t in call.tools] == [t["name"] for t in raw["tools"]]
    assert len(call.tools) == 12
    # The user's prompt, the system blocks and the mid-conversation system message all reach the
    # folded prompt.
    prompt_text = raw["messages"][0]["content"][-1]["text"]
    assert prompt_text in call.prompt
    assert "You are a Claude agent" in call.prompt
    assert "Primary working directory" in call.prompt
    assert call.max_tokens == raw["max_tokens"]


def test_claude_code_tool_round_trip() -> None:
    raw = body("claude_code_messages_tool_result.json")
    call, _thinking = parse_messages(raw, SETTINGS, MODELS)
    tool_use = raw["messages"][-2]["content"][0]
    assistant = next(t for t in call.turns if t.get("tool_calls"))
    assert assistant["tool_calls"][0]["id"] == tool_use["id"]
    assert assistant["tool_calls"][0]["name"] == "Read"
    assert json.loads(assistant["tool_calls"][0]["arguments"]) == tool_use["input"]
    tool = next(t for t in call.turns if t["role"] == "tool")
    assert tool["tool_call_id"] == tool_use["id"] and "secret-word: pelican" in tool["text"]
    assert "secret-word: pelican" in call.prompt


# --- SDKs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["ai_sdk_responses_tool_output.json", "openai_agents_responses_tool_output.json"],
)
def test_sdk_tool_round_trips(name: str) -> None:
    raw = body(name)
    call = parse_responses(read_request(raw), SETTINGS, MODELS).call
    assert [t["name"] for t in call.tools] == ["get_weather"]
    roles = [t["role"] for t in call.turns]
    assert roles[-3:] == ["user", "assistant", "tool"]
    assert call.turns[-2]["tool_calls"][0]["name"] == "get_weather"
    assert call.turns[-1]["text"] == "sunny in Paris"
    if "instructions" in raw:
        assert call.turns[0] == {"role": "system", "text": raw["instructions"]}


@pytest.mark.parametrize("name", ["ai_sdk_responses_stream.json", "openai_node_responses_stream.json"])
def test_sdk_streamed_requests(name: str) -> None:
    call = parse_responses(read_request(body(name)), SETTINGS, MODELS).call
    assert call.stream is True and call.turns[-1]["role"] == "user" and call.turns[-1]["text"]


def test_anthropic_sdk_tool_result_and_count_tokens() -> None:
    call, _thinking = parse_messages(body("anthropic_sdk_messages_tool_result.json"), SETTINGS, MODELS)
    assert call.turns[-1]["role"] == "tool" and call.turns[-1]["text"] == "sunny in Paris"
    counted = parse_count_tokens(body("anthropic_sdk_count_tokens.json"), SETTINGS, MODELS)
    assert counted.prompt_tokens > 0
