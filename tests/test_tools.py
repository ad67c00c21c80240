"""Tool calling and JSON output emulated on an upstream that has neither, end to end: the openai
SDK (whole, streamed, its ``chat.completions.stream`` helper, ``chat.completions.parse``) and
LangChain's ``bind_tools`` against the real gateway, with the simulator playing a model that follows
the convention (tests/decopy_sim.py: ``call``, ``after_tool``, ``on_correction``)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel

from tests.conftest import Gateway, directive, wait_until

V3 = "decopy-deepseek-v3"
R1 = "decopy-deepseek-r1"
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now.", "parameters": {"type": "object"}},
}
PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}
OSLO = {"name": "get_weather", "arguments": {"city": "Oslo"}}


def ask(tag: str, **fields: Any) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": f"{tag} What is the weather? " + directive(**fields)}]


def creates(gw: Gateway, tag: str) -> list[dict[str, Any]]:
    return [e for e in gw.sim_entries(tag) if e["kind"] == "create"]


def function_calls(resp: ChatCompletion) -> list[ChatCompletionMessageFunctionToolCall]:
    """The answer's tool calls, every one a function call (the only kind the gateway emits)."""
    calls = resp.choices[0].message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls), calls
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


def stream_parts(chunks: list[Any]) -> tuple[str, dict[int, dict[str, Any]], str | None, list[Any]]:
    """Content, tool calls by index (first delta kept whole, arguments joined), finish reason, and
    every tool-call delta as sent."""
    content, calls, finish, deltas = "", {}, None, []
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for tc in choice.delta.tool_calls or []:
            deltas.append(tc)
            if tc.index not in calls:
                calls[tc.index] = {"id": tc.id, "type": tc.type, "name": tc.function.name, "arguments": ""}
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, calls, finish, deltas


# --- whole and streamed, every directive ------------------------------------------------------


def test_whole_answer_with_one_call(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(model=V3, messages=ask(tag, call=PARIS), tools=[WEATHER])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) > 10
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    (create,) = creates(gateway, tag)
    prompt = create["entertext"]
    assert prompt.startswith("Tools: ") and "- get_weather: Current weather for a city." in prompt
    assert f"\n\nUser: {tag} What is the weather?" in prompt
    assert resp.usage is not None and resp.usage.prompt_tokens > len(prompt) // 5  # the folded prompt is counted
    with gateway.http() as http:
        doc = http.get("/openapi.json").json()
        raw = http.post(
            "/v1/chat/completions", json={"model": V3, "messages": ask(tag + "raw", call=PARIS), "tools": [WEATHER]}
        ).json()
    schema = {"$ref": "#/components/schemas/ChatCompletion", "components": doc["components"]}
    jsonschema.validate(raw, schema)  # the documented shape, tool_calls included
    assert raw["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_streamed_call_after_prose_every_delta_well_formed(gateway: Gateway, tag: str) -> None:
    chunks = list(
        gateway.client().chat.completions.create(
            model=V3,
            stream=True,
            messages=ask(tag, call=PARIS, prose="Let me check that for you.\n", after_text="\nDone, bye!"),
            tools=[WEATHER],
        )
    )
    content, calls, finish, deltas = stream_parts(chunks)
    assert content == "Let me check that for you." and finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    first = deltas[0]
    assert first.index == 0 and first.id and first.id.startswith("call_") and first.type == "function"
    assert all(d.function.arguments for d in deltas)  # never an empty piece
    text_at = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    call_at = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.tool_calls]
    assert max(text_at) < min(call_at)  # the prose went out before the call


@pytest.mark.parametrize("split", ["chars", "tags"])
def test_two_parallel_calls_however_split(gateway: Gateway, tag: str, split: str) -> None:
    chunks = list(
        gateway.client().chat.completions.create(
            model=V3, stream=True, messages=ask(tag, call=[PARIS, OSLO], split=split), tools=[WEATHER]
        )
    )
    content, calls, finish, _ = stream_parts(chunks)
    assert content == "" and finish == "tool_calls" and sorted(calls) == [0, 1]
    assert [json.loads(calls[i]["arguments"])["city"] for i in (0, 1)] == ["Paris", "Oslo"]
    assert calls[0]["id"] != calls[1]["id"]


def test_parallel_tool_calls_false_keeps_the_first(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3, messages=ask(tag, call=[PARIS, OSLO]), tools=[WEATHER], parallel_tool_calls=False
    )
    calls = function_calls(resp)
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris"]
    assert "at most one tool" in creates(gateway, tag)[0]["entertext"]


@pytest.mark.parametrize("style", ["fence_json", "broken", "unclosed"])
def test_repairable_calls_are_repaired(gateway: Gateway, tag: str, style: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3, messages=ask(tag, call=PARIS, call_style=style), tools=[WEATHER]
    )
    (call,) = function_calls(resp)
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert len(creates(gateway, tag)) == 1  # no retry needed


def test_markup_in_a_code_fence_is_text(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3, messages=ask(tag, call=PARIS, call_style="in_code", prose="Example:\n"), tools=[WEATHER]
    )
    message = resp.choices[0].message
    assert message.tool_calls is None and resp.choices[0].finish_reason == "stop"
    assert message.content is not None and message.content.startswith("Example:\n```\n<tool_call>{")


def test_no_call_is_a_plain_answer(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3, messages=ask(tag, reply=["Sunny, ", "I think."]), tools=[WEATHER]
    )
    assert resp.choices[0].message.content == "Sunny, I think." and resp.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"call": {"name": "launch_rockets", "arguments": {}}}, "'launch_rockets', which is not available"),
        ({"call": {"name": "get_weather", "arguments": {"town": "Paris"}}}, "do not match its schema"),
        ({"call": PARIS, "call_style": "garbage"}, "not valid JSON"),
    ],
    ids=["unknown_tool", "bad_arguments", "broken_json"],
)
def test_invalid_call_gets_one_corrective_retry(gateway: Gateway, tag: str, bad: dict[str, Any], problem: str) -> None:
    chunks = list(
        gateway.client().chat.completions.create(
            model=V3, stream=True, messages=ask(tag, **bad, on_correction={"call": PARIS}), tools=[WEATHER]
        )
    )
    content, calls, finish, _ = stream_parts(chunks)
    assert content == "" and finish == "tool_calls" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    first, second = creates(gateway, tag)
    assert second["entertext"].startswith(first["entertext"] + "\n\nCorrection: in your last answer, ")
    assert problem in second["entertext"]


def test_invalid_call_twice_is_an_error_never_a_call(gateway: Gateway, tag: str) -> None:
    bad = {"name": "launch_rockets", "arguments": {}}
    with pytest.raises(openai.APIStatusError) as exc:
        gateway.client().chat.completions.create(model=V3, messages=ask(tag, call=bad), tools=[WEATHER])
    assert exc.value.status_code == 502 and exc.value.body["code"] == "invalid_tool_call"  # type: ignore[index]
    assert len(creates(gateway, tag)) == 2


def test_invalid_call_after_prose_ends_as_text(gateway: Gateway, tag: str) -> None:
    bad = {"name": "get_weather", "arguments": {"city": 7}}
    resp = gateway.client().chat.completions.create(
        model=V3, messages=ask(tag, call=bad, prose="Checking."), tools=[WEATHER]
    )
    message = resp.choices[0].message
    assert message.content == "Checking." and message.tool_calls is None and resp.choices[0].finish_reason == "stop"
    assert len(creates(gateway, tag)) == 1  # text had gone out: no retry


def test_tool_choice_required(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3,
        messages=ask(tag, reply=["No need for tools."], on_correction={"call": PARIS, "prose": "Fine."}),
        tools=[WEATHER],
        tool_choice="required",
    )
    assert resp.choices[0].message.content == "Fine." and resp.choices[0].message.tool_calls
    first, second = creates(gateway, tag)
    assert "must call at least one tool" in first["entertext"] and "must call a tool" in second["entertext"]
    with pytest.raises(openai.APIStatusError) as exc:
        gateway.client().chat.completions.create(
            model=V3, messages=ask(tag + "b", reply=["Never."]), tools=[WEATHER], tool_choice="required"
        )
    assert exc.value.status_code == 502 and exc.value.body["code"] == "tool_call_missing"  # type: ignore[index]


def test_tool_choice_named_and_none(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3,
        messages=ask(tag, call={"name": "get_time", "arguments": {}}),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in function_calls(resp)] == ["get_time"]
    prompt = creates(gateway, tag)[0]["entertext"]
    assert "- get_time" in prompt and "- get_weather" not in prompt
    resp = gateway.client().chat.completions.create(
        model=V3, messages=ask(tag + "n", reply=["Plain."]), tools=[WEATHER], tool_choice="none"
    )
    assert resp.choices[0].message.content == "Plain."
    assert "Tools:" not in creates(gateway, tag + "n")[0]["entertext"]


def test_reasoning_model_thinks_then_calls(gateway: Gateway, tag: str) -> None:
    chunks = list(
        gateway.client().chat.completions.create(
            model=R1, stream=True, messages=ask(tag, call=PARIS, think="I should use <tool_call> now."), tools=[WEATHER]
        )
    )
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content, calls, finish, _ = stream_parts(chunks)
    assert reasoning == "I should use <tool_call> now." and content == "" and finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"


def test_a_tool_loop_with_the_result_folded_in(gateway: Gateway, tag: str) -> None:
    client = gateway.client()
    messages = ask(tag, call=PARIS, after_tool={"reply": ["It is ", "20 C in Paris."]})
    first = client.chat.completions.create(model=V3, messages=messages, tools=[WEATHER])
    call = (first.choices[0].message.tool_calls or [])[0]
    messages = [
        *messages,
        first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 20}'},
    ]
    second = client.chat.completions.create(model=V3, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "It is 20 C in Paris." and second.choices[0].finish_reason == "stop"
    prompt = creates(gateway, tag)[-1]["entertext"]
    folded = '<tool_call>{"id":"%s","name":"get_weather","arguments":{"city":"Paris"}}</tool_call>' % call.id
    assert f"\n\nAssistant: {folded}\n\nTool ({call.id}, get_weather): " + '{"temp_c": 20}' in prompt


# --- the SDK's helpers --------------------------------------------------------------------------


class Weather(BaseModel):
    city: str


def test_sdk_stream_helper_accumulates_tool_calls(gateway: Gateway, tag: str) -> None:
    tool = openai.pydantic_function_tool(Weather, name="get_weather", description="Weather for a city.")
    with gateway.client().chat.completions.stream(
        model=V3, messages=ask(tag, call=[PARIS, OSLO], prose="Two cities: "), tools=[tool]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events and "content.done" in events
    message = final.choices[0].message
    assert message.content == "Two cities:"
    parsed = [c.function.parsed_arguments for c in message.tool_calls or []]
    assert parsed == [Weather(city="Paris"), Weather(city="Oslo")]


class Person(BaseModel):
    name: str
    age: int


def test_sdk_parse_with_a_pydantic_model(gateway: Gateway, tag: str) -> None:
    chatty = 'Sure! Here is the JSON:\n```json\n{"name": "Ada", "age": 36}\n```\nAnything else?'
    resp = gateway.client().chat.completions.parse(
        model=V3, messages=ask(tag, reply=[chatty[:20], chatty[20:]]), response_format=Person
    )
    assert resp.choices[0].message.parsed == Person(name="Ada", age=36)
    prompt = creates(gateway, tag)[0]["entertext"]
    assert "\n\nOutput: answer with exactly one JSON object" in prompt and '"age":{"type":"integer"}' in prompt


def test_json_object_streamed_only_once_valid(gateway: Gateway, tag: str) -> None:
    chunks = list(
        gateway.client().chat.completions.create(
            model=V3,
            stream=True,
            response_format={"type": "json_object"},
            messages=ask(tag, reply=["Not JSON at all"], on_correction={"reply": ['{"ok": ', "true}"]}),
        )
    )
    content, _, finish, _ = stream_parts(chunks)
    assert json.loads(content) == {"ok": True} and finish == "stop"
    assert len(creates(gateway, tag)) == 2


def test_json_schema_failing_twice_is_an_error(gateway: Gateway, tag: str) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        gateway.client().chat.completions.parse(
            model=V3, messages=ask(tag, reply=['{"name": "Ada"}']), response_format=Person
        )
    assert exc.value.status_code == 502 and exc.value.body["code"] == "invalid_json_output"  # type: ignore[index]
    assert "age" in exc.value.message


# --- LangChain --------------------------------------------------------------------------------


def test_langchain_bind_tools_loop(gateway: Gateway, tag: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"20 C in {city}"

    llm = ChatOpenAI(model=V3, base_url=gateway.v1, api_key=gateway.api_key, max_retries=0, timeout=30)  # type: ignore[arg-type]
    bound = llm.bind_tools([get_weather])
    script = directive(call=PARIS, after_tool={"reply": ["The weather: ", "{result}."]})
    messages: list[Any] = [HumanMessage(f"{tag} weather in Paris? {script}")]
    for _ in range(3):
        answer = bound.invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:
            break
        for call in answer.tool_calls:
            messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert messages[1].tool_calls[0]["args"] == {"city": "Paris"}
    assert messages[-1].content == "The weather: 20 C in Paris."  # the tool's own output came back
    last = creates(gateway, tag)[-1]["entertext"]
    assert "Tool (call_" in last and "20 C in Paris" in last
    # Streamed, LangChain merges the tool-call chunks by index: the first carries the id and name.
    streamed: Any = None
    for chunk in bound.stream([HumanMessage(f"{tag}s weather in Paris? {script}")]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("get_weather", {"city": "Paris"})]


# --- refusals and metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": 5}}}]}, None),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ],
    ids=["custom_tool", "unknown_named", "required_without_tools", "duplicate", "bad_schema", "schema_missing"],
)
def test_bad_tool_requests_are_400(gateway: Gateway, tag: str, fields: dict[str, Any], param: str | None) -> None:
    with gateway.http() as http:
        resp = http.post(
            "/v1/chat/completions", json={"model": V3, "messages": [{"role": "user", "content": tag}], **fields}
        )
    assert resp.status_code == 400, resp.text
    if param is not None:
        assert resp.json()["error"]["param"].startswith(param)
    assert gateway.sim_entries(tag) == []


def test_folded_prompt_over_the_cap_is_400(gateway: Gateway, tag: str) -> None:
    huge = {"type": "function", "function": {"name": "big", "description": "x" * 210_000}}
    with pytest.raises(openai.BadRequestError) as exc:
        gateway.client().chat.completions.create(model=V3, messages=ask(tag), tools=[huge])  # type: ignore[list-item]
    assert exc.value.body["code"] == "prompt_too_large" and "TOOLS_PROMPT_MAX_CHARS" in exc.value.message  # type: ignore[index]


def test_metrics_count_calls_per_model(gateway: Gateway, tag: str) -> None:
    client = gateway.client()
    client.chat.completions.create(model=V3, messages=ask(tag, call=PARIS, call_style="broken"), tools=[WEATHER])
    unknown = {"name": "launch_rockets", "arguments": {}}
    client.chat.completions.create(
        model=V3, messages=ask(tag + "u", call=unknown, on_correction={"call": PARIS}), tools=[WEATHER]
    )
    client.chat.completions.create(
        model=V3, messages=ask(tag + "j", reply=["```json\n{}\n```"]), response_format={"type": "json_object"}
    )

    def outcomes(metric: str) -> set[str]:
        text = httpx.get(gateway.base_url + "/metrics/cluster", timeout=5).text
        seen = set()
        for labels, value in re.findall(metric + r"\{([^}]*)\} (\S+)", text):
            if 'model="decopy-deepseek-v3"' in labels and float(value) > 0:
                seen |= set(re.findall(r'outcome="(\w+)"', labels))
        return seen

    wait_until(
        lambda: {"emitted", "repaired", "retried", "refused"} <= outcomes("decopy_tool_calls_total"),
        15,
        "tool-call metrics",
    )
    wait_until(lambda: {"valid", "repaired"} <= outcomes("decopy_json_answers_total"), 15, "JSON answer metrics")
