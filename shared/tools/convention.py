"""The tool-call convention: how tools, calls, results and corrections are written as text.

This is a contract (the tests, the simulator and operators rely on it; docs/tools.md shows it):

- a call is one block ``<tool_call>{"name": "<tool>", "arguments": {…}}</tool_call>``; parallel
  calls are several blocks, one after the other;
- the tools are listed compactly, one entry per tool: ``- <name>: <description>`` and on the
  next line ``  arguments: <JSON Schema, compact>`` (schema keywords that carry no meaning for
  the model, such as ``title`` or ``$schema``, are left out of the prompt, not of the validation);
- an earlier call is folded into its assistant turn as the same block with its ``id`` first;
  its result is a turn ``Tool (<call id>, <tool name>): <result>`` (``…, error)`` when the tool
  failed), so call and result are linked by the call id;
- a corrective retry appends a block ``Correction: <what was wrong>``.

Only the instruction's wording is a setting (``TOOLS_INSTRUCTION``); the markup is not.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.messages import OutputFormat, ToolCall, ToolChoice, ToolSpec

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
#: The label of the block a corrective retry appends to the prompt.
CORRECTION_LABEL = "Correction:"

DEFAULT_INSTRUCTION = (
    "You can call the tools listed below. To call one, write exactly one block of this form:\n"
    '<tool_call>{"name": "<tool name>", "arguments": {<the arguments as a JSON object>}}</tool_call>\n'
    "To call several tools at once, write one block per call, one after the other. The arguments must "
    "be valid JSON that matches the tool's arguments schema, using only the properties it lists. Never "
    "put a call inside a code block. Write any short text for the user before the calls; after the "
    "last call, stop and write nothing more: each result comes back in a turn "
    '"Tool (<call id>, <tool name>): <result>". If no tool is needed, answer normally without a call.'
)

#: Schema keywords left out of the prompt: they say nothing the model needs to write arguments.
_PROMPT_SKIP = frozenset({"$schema", "$id", "$comment", "title", "examples", "deprecated", "readOnly", "writeOnly"})
#: Keywords whose value is one subschema, a list of subschemas, or a map of name -> subschema.
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def prompt_schema(schema: Any) -> Any:
    """``schema`` without the keywords that carry no meaning for the model (see the module doc)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _PROMPT_SKIP:
            continue
        if key == "additionalProperties" and value is False:
            continue  # the instruction says "only the properties it lists"; validation still checks it
        if key in _ONE:
            out[key] = prompt_schema(value)
        elif key in _LIST and isinstance(value, list):
            out[key] = [prompt_schema(v) for v in value]
        elif key in _MAP and isinstance(value, dict):
            out[key] = {name: prompt_schema(v) for name, v in value.items()}
        else:
            out[key] = value
    return out


def compact_json(value: Any) -> str:
    """JSON without spaces, non-ASCII kept (fewer characters in the prompt)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_BLANK_LINES = re.compile(r"\n\s*\n")


def render_tools(tools: list[ToolSpec]) -> str:
    """The tools, one entry each: name, description, arguments schema."""
    lines = []
    for tool in tools:
        description = _BLANK_LINES.sub("\n\n", tool.get("description", "").strip())
        head = f"- {tool['name']}: {description}" if description else f"- {tool['name']}"
        lines.append(head)
        lines.append(f"  arguments: {compact_json(prompt_schema(tool.get('parameters') or {}))}")
    return "\n".join(lines)


def choice_rule(choice: ToolChoice, parallel: bool) -> str:
    """The sentence the choice and ``parallel_tool_calls`` add to the instruction ("" for none)."""
    rules = []
    if isinstance(choice, dict):
        rules.append(f"In this answer you must call the tool {choice['name']}.")
    elif choice == "required":
        rules.append("In this answer you must call at least one tool.")
    if not parallel:
        rules.append("Call at most one tool in this answer.")
    return " ".join(rules)


def offered(tools: list[ToolSpec], choice: ToolChoice) -> list[ToolSpec]:
    """The tools the model is shown and may call: none for ``none``, only the named one for a name."""
    if choice == "none":
        return []
    if isinstance(choice, dict):
        return [t for t in tools if t["name"] == choice["name"]]
    return tools


def tools_block(tools: list[ToolSpec], choice: ToolChoice, parallel: bool, instruction: str) -> str:
    """The ``Tools:`` block of the prompt ("" when no tool is offered)."""
    shown = offered(tools, choice)
    if not shown:
        return ""
    rule = choice_rule(choice, parallel)
    head = f"{instruction.strip()} {rule}" if rule else instruction.strip()
    return f"Tools: {head}\n\n{render_tools(shown)}"


def render_call(call: ToolCall) -> str:
    """An earlier call as the model would have written it, with its id first."""
    try:
        arguments: Any = json.loads(call["arguments"]) if call["arguments"].strip() else {}
    except ValueError:
        arguments = call["arguments"]  # the client sent it as it was: keep it as a string
    body = {"id": call["id"], "name": call["name"], "arguments": arguments}
    return f"{OPEN}{compact_json(body)}{CLOSE}"


def result_label(call_id: str, name: str | None, is_error: bool) -> str:
    """``Tool (<call id>, <name>)``, ``…, error)`` when the tool failed."""
    parts = [p for p in (call_id, name) if p]
    if is_error:
        parts.append("error")
    return f"Tool ({', '.join(parts)})" if parts else "Tool"


def output_block(output: OutputFormat) -> str:
    """The ``Output:`` block of a JSON answer ("" for plain text)."""
    if output["type"] == "text":
        return ""
    schema = output.get("schema") if output["type"] == "json_schema" else None
    kind = "object" if schema is None or schema.get("type", "object") == "object" else "value"
    text = f"Output: answer with exactly one JSON {kind} and nothing else: no text before or after it, no code block."
    if schema is not None:
        text += f" It must be valid against this JSON Schema: {compact_json(prompt_schema(schema))}"
    return text


def correction(problem: str) -> str:
    """The block a corrective retry appends to the prompt."""
    return f"\n\n{CORRECTION_LABEL} in your last answer, {problem}. Answer again, following the rules above exactly."
