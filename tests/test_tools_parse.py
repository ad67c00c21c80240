"""Tool-call emulation, the pure pieces: the streaming parser (split at every byte, fences, half
tags), JSON repair, schema validation, the answer reader's choices and retries, and the folding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.engine.fold import fold
from shared.messages import ChatJob, OutputFormat, ToolSpec, Turn
from shared.tools.convention import CORRECTION_LABEL, DEFAULT_INSTRUCTION, prompt_schema
from shared.tools.jsonout import OutputError, check
from shared.tools.parser import CallParser, Piece
from shared.tools.reader import AnswerReader, Emulation, Refusal, Retry
from shared.tools.repair import CallError, ToolBox, loads_lenient

WEATHER: ToolSpec = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME: ToolSpec = {"name": "get_time", "description": "", "parameters": {"type": "object", "properties": {}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
PARIS_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def merged(pieces: list[Any]) -> list[Any]:
    out: list[Any] = []
    for kind, value in pieces:
        if out and kind == "text" and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + value)
        else:
            out.append((kind, value))
    return out


def parse(deltas: list[str]) -> list[Piece]:
    parser = CallParser()
    pieces: list[Piece] = []
    for delta in deltas:
        pieces += parser.feed(delta)
    return merged(pieces + parser.end())


FENCED = "Like so:\n```xml\n" + CALL + "\n```\nThat is all."
THINK = "<think>I may use <tool_call> here</think>"
# Each answer, and what the client must get from it, however it is split.
ANSWERS: list[tuple[str, list[Piece]]] = [
    ("Let me look.\n\n" + CALL + "\nDone!", [("text", "Let me look."), ("call", CALL[11:-12])]),
    (CALL + CALL.replace("Paris", "Oslo"), [("call", CALL[11:-12]), ("call", CALL[11:-12].replace("Paris", "Oslo"))]),
    ("Write `" + CALL + "` to call it.", [("text", "Write `" + CALL + "` to call it.")]),
    (
        "Like so:\n```xml\n" + CALL + "\n```\nThat is all.",
        [("text", "Like so:\n```xml\n" + CALL + "\n```\nThat is all.")],
    ),
    ("~~~\n" + CALL + "\n~~~\n" + CALL, [("text", "~~~\n" + CALL + "\n~~~"), ("call", CALL[11:-12])]),
    ("````\n```\n" + CALL + "\n````\n", [("text", "````\n```\n" + CALL + "\n````\n")]),
    ("a ``b ` c`` d " + CALL, [("text", "a ``b ` c`` d"), ("call", CALL[11:-12])]),
    ("It is 3 < 4 and x<y.", [("text", "It is 3 < 4 and x<y.")]),
    ("Almost a call <tool_ca", [("text", "Almost a call")]),
    ("ends in <", [("text", "ends in <")]),
    ("stray </tool_call> closing tag </tool_", [("text", "stray  closing tag")]),
    ("Cut off " + CALL[:-5], [("text", "Cut off"), ("open", CALL[11:-5])]),
    (
        "<think>I may use <tool_call> here</think>\n\n" + CALL,
        [("text", "<think>I may use <tool_call> here</think>"), ("call", CALL[11:-12])],
    ),
    ("  <thinking is fine", [("text", "  <thinking is fine")]),
    ("<tool_call>{A}\n<tool_call>{B}</tool_call>", [("open", "{A}\n"), ("call", "{B}")]),
    ("No call at all.\n", [("text", "No call at all.\n")]),
]


@pytest.mark.parametrize("answer, expected", ANSWERS, ids=[a[:30] for a, _ in ANSWERS])
def test_parser_same_result_however_split(answer: str, expected: list[Piece]) -> None:
    assert parse([answer]) == expected
    assert parse(list(answer)) == expected  # one character per delta
    for i in range(len(answer) + 1):  # every place for one cut...
        assert parse([answer[:i], answer[i:]]) == expected, i
    for i in range(0, len(answer), 3):  # ...and many places for two
        for j in range(i, len(answer), 5):
            assert parse([answer[:i], answer[i:j], answer[j:]]) == expected, (i, j)


def test_parser_text_before_a_call_goes_out_at_once() -> None:
    parser = CallParser()
    assert parser.feed("Checking the ") == [("text", "Checking the")]  # the space may precede a call
    assert parser.feed("weather <tool") == [("text", " weather")]
    assert parser.feed("_call>{") == []
    assert parser.feed('"name": "x"}</tool_call> and more') == [("call", '{"name": "x"}')]
    assert parser.end() == []


# --- repair and validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, value",
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": [1, 2,],}\n```', {"a": [1, 2]}),
        ('{"name": "x", "arguments": {"a": 1}', {"name": "x", "arguments": {"a": 1}}),
        ('Sure: {"a": "} ,]"} hope that helps', {"a": "} ,]"}),
        ('\n  {"a": {"b": [1, {"c": 2},]},\n}  ', {"a": {"b": [1, {"c": 2}]}}),
    ],
)
def test_repair_unambiguous_defects(raw: str, value: Any) -> None:
    assert loads_lenient(raw)[0] == value


@pytest.mark.parametrize("raw", ["{'a': 1}", '{"a": "unterminated', "no json here", "{a: 1}"])
def test_repair_refuses_guesses(raw: str) -> None:
    with pytest.raises(ValueError):
        loads_lenient(raw)


def test_toolbox_decodes_valid_calls_with_unique_ids() -> None:
    box = ToolBox([WEATHER, TIME])
    first, repaired = box.decode('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    second, _ = box.decode('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert not repaired and json.loads(first["arguments"]) == {"city": "Paris"}
    assert first["id"].startswith("call_") and first["id"] != second["id"]
    call, repaired = box.decode('{"name": "get_time"}')  # no arguments: an empty object
    assert repaired and call["arguments"] == "{}"
    call, repaired = box.decode('{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}')
    assert repaired and json.loads(call["arguments"]) == {"city": "Rome"}


@pytest.mark.parametrize(
    "raw, words",
    [
        ('{"name": "launch_rockets", "arguments": {}}', ["launch_rockets", "not available", "get_weather"]),
        ('{"name": "get_weather", "arguments": {"city": 7}}', ["city", "not of type"]),
        ('{"name": "get_weather", "arguments": {"town": "Paris"}}', ["get_weather", "schema"]),
        ('{"name": "get_weather", "arguments": {"city": "x", "unit": "k"}}', ["unit"]),
        ("<<not json>>", ["not valid JSON"]),
        ('["get_weather"]', ['"name"']),
    ],
)
def test_toolbox_refuses_invalid_calls_saying_why(raw: str, words: list[str]) -> None:
    with pytest.raises(CallError) as exc:
        ToolBox([WEATHER]).decode(raw)
    for word in words:
        assert word in str(exc.value)


def test_json_output_extracted_and_checked() -> None:
    schema: OutputFormat = {
        "type": "json_schema",
        "name": "p",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "strict": True,
    }
    assert check('{"n": 1}', schema) == ('{"n": 1}', False)
    assert check('Here you go:\n```json\n{"n": 2,}\n```\nEnjoy!', schema) == ('{"n": 2}', True)
    with pytest.raises(OutputError, match="schema"):
        check('{"n": "two"}', schema)
    with pytest.raises(OutputError, match="not an object"):
        check("[1, 2]", {"type": "json_object", "name": None, "schema": None, "strict": False})
    with pytest.raises(OutputError):
        check("I cannot do that.", schema)
    listed: OutputFormat = {"type": "json_schema", "name": "l", "schema": {"type": "array"}, "strict": False}
    assert check("[1, 2]", listed) == ("[1, 2]", False)


# --- the answer reader ------------------------------------------------------------------------


def job(**fields: Any) -> ChatJob:
    base: ChatJob = {
        "request_id": "r",
        "model": "m",
        "upstream_model": "M",
        "prompt": "p",
        "image": None,
        "tools": [WEATHER, TIME],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "output": None,
    }
    return {**base, **fields}  # type: ignore[typeddict-item]


def read(answer: str, *, may_retry: bool = True, **fields: Any) -> tuple[list[Any], AnswerReader]:
    emu = Emulation.of(job(**fields))
    assert emu is not None
    reader = AnswerReader(emu, may_retry=may_retry)
    actions = []
    for ch in answer:
        actions += reader.feed(ch)
        if reader.done:
            break
    else:
        actions += reader.end()
    return merged(actions), reader


def test_plain_job_has_no_emulation() -> None:
    assert Emulation.of(job(tools=[], output=None)) is None
    assert Emulation.of(job(tools=[], output={"type": "text", "name": None, "schema": None, "strict": False})) is None


def test_reader_auto_streams_text_then_calls() -> None:
    actions, reader = read("Checking.\n" + CALL + "\n" + CALL.replace("Paris", "Oslo") + " bye")
    assert [a[0] for a in actions] == ["text", "call", "call"]
    assert "".join(a[1] for a in actions if a[0] == "text") == "Checking."
    assert reader.finish_reason == "tool_calls" and reader.counts.emitted == 2


def test_reader_parallel_false_keeps_the_first_call() -> None:
    actions, reader = read(CALL + CALL, parallel_tool_calls=False)
    assert [a[0] for a in actions] == ["call"] and reader.done


def test_reader_retries_a_bad_call_when_nothing_went_out() -> None:
    with pytest.raises(Retry) as exc:
        read('<tool_call>{"name": "nope", "arguments": {}}</tool_call>')
    assert exc.value.correction.startswith(f"\n\n{CORRECTION_LABEL} ") and "'nope'" in exc.value.correction


def test_reader_ends_as_text_when_a_bad_call_comes_after_text() -> None:
    actions, reader = read('Sure.\n<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>')
    assert actions == [("text", "Sure.")] and reader.finish_reason == "stop" and reader.counts.refused == 1


def test_reader_no_second_retry() -> None:
    with pytest.raises(Refusal) as exc:
        read('<tool_call>{"name": "nope"}</tool_call>', may_retry=False)
    assert exc.value.error.code == "invalid_tool_call" and "'nope'" in exc.value.error.message
    actions, reader = read('<tool_call>{"name": "nope"}</tool_call>' + CALL, may_retry=False)
    assert [a[0] for a in actions] == ["call"] and reader.counts.refused == 1


def test_reader_required_holds_text_and_retries_then_refuses() -> None:
    with pytest.raises(Retry) as exc:
        read("I will not call anything.", tool_choice="required")
    assert "must call a tool" in exc.value.correction
    with pytest.raises(Refusal) as refusal:
        read("Still no call.", tool_choice="required", may_retry=False)
    assert refusal.value.error.code == "tool_call_missing"
    actions, _ = read("On it.\n" + CALL, tool_choice="required")
    assert [a[0] for a in actions] == ["text", "call"] and actions[0][1] == "On it."


def test_reader_named_choice_offers_only_that_tool() -> None:
    with pytest.raises(Retry) as exc:
        read(
            '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}}</tool_call>',
            tool_choice={"name": "get_time"},
        )
    assert "get_weather" in exc.value.correction and "get_time" in exc.value.correction


def test_reader_none_refuses_calls() -> None:
    with pytest.raises(Retry):
        read(CALL, tool_choice="none")


def test_reader_json_output() -> None:
    fmt: OutputFormat = {"type": "json_object", "name": None, "schema": None, "strict": False}
    actions, reader = read('<think>hmm</think>\nSure: ```json\n{"a": 1}\n```', tools=[], output=fmt)
    assert actions == [("text", '<think>hmm</think>{"a": 1}')] and reader.counts.json_repaired == 1
    with pytest.raises(Retry):
        read("no json", tools=[], output=fmt)
    with pytest.raises(Refusal) as exc:
        read("no json", tools=[], output=fmt, may_retry=False)
    assert exc.value.error.code == "invalid_json_output"


# --- folding ----------------------------------------------------------------------------------


def test_fold_plain_conversation_unchanged() -> None:
    assert fold([{"role": "user", "text": "hi"}]) == "hi"
    turns: list[Turn] = [{"role": "system", "text": "S"}, {"role": "user", "text": "U", "name": "ada"}]
    assert fold(turns) == "System: S\n\nUser (ada): U"


def test_fold_tools_calls_and_results_layout() -> None:
    turns: list[Turn] = [
        {"role": "system", "text": "Be brief."},
        {"role": "user", "text": "Weather?"},
        {
            "role": "assistant",
            "text": "Looking.",
            "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}],
        },
        {"role": "tool", "text": "20C", "tool_call_id": "call_1"},
        {"role": "tool", "text": "boom", "tool_call_id": "call_2", "is_error": True},
    ]
    prompt = fold(turns, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    blocks = prompt.split("\n\n")
    assert blocks[0] == "System: Be brief."
    assert blocks[1].startswith("Tools: " + DEFAULT_INSTRUCTION.split("\n")[0])
    assert "must call at least one tool" in prompt and "at most one tool" in prompt
    assert blocks[-5].startswith("- get_weather: Current weather for a city.\n  arguments: {")
    assert '"additionalProperties"' not in prompt
    assert blocks[-4] == "User: Weather?"
    folded_call = '<tool_call>{"id":"call_1","name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'
    assert blocks[-3] == "Assistant: Looking.\n" + folded_call
    assert blocks[-2] == "Tool (call_1, get_weather): 20C"
    assert blocks[-1] == "Tool (call_2, error): boom"


def test_fold_none_and_named_choices() -> None:
    turns: list[Turn] = [{"role": "user", "text": "hi"}]
    assert "Tools:" not in fold(turns, tools=[WEATHER, TIME], tool_choice="none")
    named = fold(turns, tools=[WEATHER, TIME], tool_choice={"name": "get_time"})
    assert "- get_time" in named and "- get_weather" not in named and "must call the tool get_time" in named


def test_fold_output_block_last() -> None:
    fmt: OutputFormat = {"type": "json_schema", "name": "x", "schema": {"type": "object", "title": "T"}, "strict": True}
    prompt = fold([{"role": "user", "text": "hi"}], output=fmt)
    assert prompt.startswith("User: hi\n\nOutput: ") and prompt.endswith('{"type":"object"}')


def test_prompt_schema_keeps_property_names_called_title() -> None:
    schema = {"type": "object", "title": "X", "properties": {"title": {"type": "string", "title": "Title"}}}
    assert prompt_schema(schema) == {"type": "object", "properties": {"title": {"type": "string"}}}


# --- the simulator's tool-calling model ---------------------------------------------------------


def test_simulator_scripts_calls_rounds_and_corrections() -> None:
    from tests.decopy_sim import answer_pieces, parse_directive

    script = {"call": [PARIS_CALL, PARIS_CALL], "prose": "Hi. ", "after_tool": {"reply": ["got {result}"]}}
    prompt = "User: weather? @@sim@@ " + json.dumps({**script, "on_correction": {"reply": ["fixed"]}})
    pieces = answer_pieces(parse_directive(prompt), prompt)
    one = ("call", json.dumps(PARIS_CALL))
    assert len(pieces) > 3 and parse(pieces) == [("text", "Hi."), one, one]
    later = prompt + "\n\nAssistant: <tool_call>{}</tool_call>\n\nTool (call_1, get_weather): 20 C\n\nUser: ok"
    assert answer_pieces(parse_directive(later), later) == ["got 20 C"]
    fixed = prompt + "\n\nCorrection: in your last answer, x."
    assert answer_pieces(parse_directive(fixed), fixed) == ["fixed"]
    fenced = "@@sim@@ " + json.dumps({"call": PARIS_CALL, "call_style": "in_code", "split": "chars"})
    assert [k for k, _ in parse(answer_pieces(parse_directive(fenced), fenced))] == ["text"]


def test_simulator_complies_without_a_directive() -> None:
    from tests.decopy_sim import answer_pieces, parse_directive

    required = fold([{"role": "user", "text": "hi"}], tools=[WEATHER, TIME], tool_choice="required")
    (answer,) = answer_pieces(parse_directive(required), required)
    call, _ = ToolBox([WEATHER, TIME]).decode(parse([answer])[0][1])
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "x"}
    schema: OutputFormat = {"type": "json_schema", "name": "s", "schema": WEATHER["parameters"], "strict": True}
    asked = fold([{"role": "user", "text": "hi"}], output=schema)
    assert check("".join(answer_pieces(parse_directive(asked), asked)), schema)[0] == '{"city": "x"}'


# --- property: the split never matters, and no markup leaks ------------------------------------

TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_",
    "`",
    "``",
    "```",
    "~~~",
    "\n",
    " ",
    "<",
    "a",
    "{}",
    "<think>",
    "</think>",
]


@given(
    st.lists(st.sampled_from(TOKENS), max_size=25).map("".join),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
@settings(max_examples=400, deadline=None, derandomize=True)
def test_parser_any_answer_any_split(answer: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(answer)) for c in cuts})
    deltas = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)])]
    whole = parse([answer])
    assert parse(deltas) == whole
    assert parse(list(answer)) == whole
    text = "".join(v for k, v in whole if k == "text")
    if not any(c in answer for c in "`~") and "<think>" not in answer:
        assert "<tool_call>" not in text and "</tool_call>" not in text
    kinds = [k for k, _ in whole]
    first_call = next((i for i, k in enumerate(kinds) if k != "text"), len(kinds))
    assert "text" not in kinds[first_call:]  # no text after a call
