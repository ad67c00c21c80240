"""Tool calls through the Messages and Responses front doors, end to end with the
anthropic and openai SDKs against the simulator playing a model that follows the tool-call
convention: a call comes back as a ``tool_use`` block (``toolu_…``, ``stop_reason: "tool_use"``)
or a ``function_call`` item (streamed with ``response.function_call_arguments.delta``), and the
tool's result sent back (a ``tool_result`` block, a ``function_call_output`` item after
``previous_response_id``) reaches the model, which answers with it.

The emulation itself (folding the tools into the prompt, reading calls out of the answer) is the
engine's (``shared.tools``); these tests run once it is in the tree.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.conftest import Gateway, directive

pytest.importorskip("shared.tools", reason="the tool-call emulation (shared.tools) is not in this tree")

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
V3 = "decopy-deepseek-v3"


def _scripted(tag: str, reply: str) -> str:
    """A prompt whose model calls read_file on a.txt, then answers ``reply`` with the result."""
    call = {"name": "read_file", "arguments": {"path": "a.txt"}}
    return f"{tag} " + directive(call=call, prose="Reading. ", after_tool={"reply": [reply]})


def test_messages_tool_round_trip(dialects_gateway: Gateway, tag: str) -> None:
    tools: Any = [{"name": "read_file", "description": "Read a file", "input_schema": SCHEMA}]
    asked: Any = [{"role": "user", "content": _scripted(tag, "It says {result}.")}]
    with anthropic.Anthropic(
        base_url=dialects_gateway.base_url, api_key=dialects_gateway.api_key, max_retries=0
    ) as client:
        first = client.messages.create(model="claude-x", max_tokens=200, tools=tools, messages=asked)
        assert first.stop_reason == "tool_use" and [b.type for b in first.content] == ["text", "tool_use"]
        use = first.content[1]
        assert use.type == "tool_use" and use.id.startswith("toolu_") and use.input == {"path": "a.txt"}
        with client.messages.stream(model="claude-x", max_tokens=200, tools=tools, messages=asked) as stream:
            streamed = stream.get_final_message()
        assert streamed.stop_reason == "tool_use" and [b.type for b in streamed.content] == ["text", "tool_use"]
        second = client.messages.create(
            model="claude-x",
            max_tokens=200,
            tools=tools,
            messages=[
                *asked,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "pelican"}]},
            ],
        )
    assert second.stop_reason == "end_turn" and second.content[0].text == "It says pelican."  # type: ignore[union-attr]


def test_responses_tool_round_trip(dialects_gateway: Gateway, tag: str) -> None:
    tools: Any = [{"type": "function", "name": "read_file", "description": "Read a file", "parameters": SCHEMA}]
    client = dialects_gateway.client()
    prompt = _scripted(tag, "Got {result}.")
    first = client.responses.create(model=V3, tools=tools, input=prompt)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "read_file" and calls[0].call_id
    events = list(client.responses.create(model=V3, tools=tools, input=prompt, stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    second = client.responses.create(
        model=V3,
        tools=tools,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "pelican"}],
    )
    assert second.output_text == "Got pelican."
