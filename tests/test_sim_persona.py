"""The demo's upstream: the simulator's persona (tests/sim_persona.py) answers like a model would.

Fast units on the persona itself, then the simulator app with the persona switched on, driven in
process as the gateway's client drives it: a directive still wins, and without ``--demo`` the
answers are those the other tests rely on.
"""

from __future__ import annotations

import json
import re

from starlette.testclient import TestClient

from tests import decopy_sim, sim_persona

TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "name": "read_file",
        "description": "Read a file from disk",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
]
CONVENTION = 'To call a tool, answer with <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>, one per call.'


def tool_prompt(question: str, tools: str | None = None) -> str:
    listed = json.dumps(TOOLS_OPENAI) if tools is None else tools
    return f"System: You can use these tools:\n{listed}\n{CONVENTION}\n\nUser: {question}"


def calls(text: str) -> list[dict[str, object]]:
    return [json.loads(m) for m in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S)]


def test_replies_vary_with_the_prompt() -> None:
    prompts = ["Hello!", "What is a queue?", "Write some python code", "Give me a list of ideas", "The sky is blue."]
    answers = {sim_persona.full_text(p, "DeepSeek-V3") for p in prompts}
    assert len(answers) == len(prompts)
    assert all("You said" not in a or "sky" in a for a in answers)
    # the same prompt gets the same answer (a demo that can be shown twice)
    assert sim_persona.full_text("Hello!", "DeepSeek-V3") == sim_persona.full_text("Hello!", "DeepSeek-V3")


def test_the_folded_conversation_shows() -> None:
    folded = (
        "System: You answer in French.\n\nUser: My name is Ada.\n\n"
        "Assistant: Enchanté, Ada.\n\nUser (ada): What is my name?"
    )
    text = sim_persona.full_text(folded, "GPT-4o-mini")
    assert "Your name is Ada" in text
    assert "3 earlier message(s)" in text and "You answer in French." in text


def test_reasoning_model_thinks_first() -> None:
    text = sim_persona.full_text("Hello!", "DeepSeek-R1")
    assert re.fullmatch(r"<think>\n.+\n</think>\n\n\S.*", text, re.S), text
    assert "<think>" not in sim_persona.full_text("Hello!", "DeepSeek-V3")


def test_pieces_join_to_the_text_and_split_tags() -> None:
    text = sim_persona.full_text("Hello!", "DeepSeek-R1")
    pieces = sim_persona.answer("Hello!", "DeepSeek-R1")
    assert "".join(pieces) == text and len(pieces) > 5
    assert "<think>" not in pieces[0] or len(pieces[0]) > len("<think>")  # pieces are small, not whole lines
    assert all(1 <= len(p) <= 12 for p in pieces)


def test_tool_call_for_the_matching_tool_with_required_arguments() -> None:
    text = sim_persona.full_text(tool_prompt("What is the weather in Berlin?"), "DeepSeek-V3")
    assert calls(text) == [{"name": "get_weather", "arguments": {"city": "Berlin", "unit": "c"}}]
    text = sim_persona.full_text(tool_prompt("Show me the file with the notes"), "DeepSeek-V3")
    assert calls(text) == [{"name": "read_file", "arguments": {"path": "README.md"}}]
    # with reasoning: the think block comes first, the call after it
    r1 = sim_persona.full_text(tool_prompt("What is the weather in Oslo?"), "DeepSeek-R1")
    assert r1.index("</think>") < r1.index("<tool_call>")


def test_tool_detection_is_tolerant_of_the_layout() -> None:
    # No JSON definitions at all, only "name" pairs (e.g. a YAML-ish or partial rendering).
    loose = tool_prompt("Look it up", tools='- "name": "search_docs" (searches the docs)')
    assert calls(sim_persona.full_text(loose, "DeepSeek-V3")) == [{"name": "search_docs", "arguments": {}}]
    # The convention's own example call and placeholders are not tools.
    assert sim_persona.offered_tools(tool_prompt("hi", tools="(none)")) == []
    # Without the convention in the prompt, tool-like JSON is just text.
    plain = f"User: here is some JSON {json.dumps(TOOLS_OPENAI)}"
    assert "<tool_call>" not in sim_persona.full_text(plain, "DeepSeek-V3")


def test_answers_in_text_once_a_tool_result_came_back() -> None:
    prompt = tool_prompt("What is the weather in Berlin?")
    after = prompt + (
        '\n\nAssistant: <tool_call>{"name": "get_weather", "arguments": {"city": "Berlin"}}</tool_call>'
        "\n\nTool (get_weather): 21 C and sunny"
    )
    text = sim_persona.full_text(after, "DeepSeek-V3")
    assert calls(text) == [] and "21 C and sunny" in text
    # a new user question after the result: a new call
    again = after + "\n\nUser: And in Paris?"
    assert calls(sim_persona.full_text(again, "DeepSeek-V3"))[0]["name"] == "get_weather"
    # <tool_response> blocks count as results too
    tagged = prompt + "\n\n<tool_response>cloudy</tool_response>"
    assert calls(sim_persona.full_text(tagged, "DeepSeek-V3")) == []


def _stream(client: TestClient, entertext: str, model: str = "DeepSeek-R1") -> str:
    form = {"entertext": entertext, "model": model, "chat_id": "6f1f2b0e-3c1a-4b7e-9a51-0c2d3e4f5a6b", "chat_group": ""}
    headers = {"Origin": "https://decopy.ai", "product-code": "067003", "product-serial": "0" * 32}
    multipart = {name: (None, value) for name, value in form.items()}
    job = client.post("/api/decopy/ask-ai/create-job", files=multipart, headers=headers).json()
    events = client.get(f"/api/decopy/ask-ai/get-job/{job['result']['job_id']}", headers=headers).text
    return "".join(json.loads(line[6:])["data"] for line in events.splitlines() if line.startswith('data: {"'))


def test_simulator_uses_the_persona_only_in_demo_mode_and_without_a_directive() -> None:
    demo = decopy_sim.create_app()
    demo.state.sim.persona = sim_persona.answer
    with TestClient(demo) as client:
        assert _stream(client, "Hello!") == sim_persona.full_text("Hello!", "DeepSeek-R1")
        directed = _stream(client, 'Hello!\n@@sim@@ {"reply": ["a", "b"]}')
        assert directed == "ab"
    with TestClient(decopy_sim.create_app()) as client:
        assert _stream(client, "Hello!") == "Hello! You said: Hello!"
