"""Read a tool call's JSON as a model writes it: repair the common defects, then check it.

Repairs, only where the meaning is unambiguous:

- a code fence around the JSON (```` ```json … ``` ````);
- text around one JSON object (``Here it is: {…}``): the object is taken;
- trailing commas before ``}`` or ``]``;
- closing brackets missing at the very end (the model stopped one ``}`` short);
- arguments sent as a JSON string holding the object (``"arguments": "{\\"a\\": 1}"``);
- a call without ``arguments``: an empty object (the schema then decides whether that is valid).

Anything else (single quotes, comments, Python literals, unquoted keys) is not repaired: a wrong
guess would send the client a call the model did not make. The arguments are then checked
against the tool's JSON Schema with the ``jsonschema`` library.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from shared.messages import ToolCall, ToolSpec

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})[^\n]*\n(.*?)\n?\s*\1\s*$", re.S)


class CallError(ValueError):
    """A call that cannot be passed on; the message says what is wrong, for the correction."""


def new_call_id() -> str:
    """A unique call id, OpenAI's form (the Messages dialect maps ``call_`` to ``toolu_``)."""
    return "call_" + secrets.token_hex(12)


def _scan(text: str) -> tuple[str, list[str], bool]:
    """``text`` without trailing commas, the brackets left open at its end, and whether it ends
    inside a string."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    pending_comma = -1  # index in out of a comma that a closing bracket may make trailing
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
            pending_comma = -1
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            pending_comma = -1
        elif ch in "}]":
            if pending_comma >= 0:
                out[pending_comma] = ""  # a trailing comma: drop it
            pending_comma = -1
            if stack and stack[-1] == ch:
                stack.pop()
        elif ch == ",":
            pending_comma = len(out)
        elif not ch.isspace():
            pending_comma = -1
        out.append(ch)
    return "".join(out), stack, in_string


def _outer_object(text: str) -> str | None:
    """The text from the first ``{`` to its balanced ``}`` (strings respected), if any."""
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]  # never closed: the bracket repair may finish it


def loads_lenient(text: str) -> tuple[Any, bool]:
    """The JSON value in ``text`` and whether it needed a repair; ValueError if none can be read."""
    try:
        return json.loads(text), False
    except ValueError:
        pass
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(2).strip()
    if not candidate.startswith(("{", "[")):
        inner = _outer_object(candidate)
        if inner is None:
            raise ValueError("no JSON object found")
        candidate = inner
    else:
        inner = _outer_object(candidate) if candidate.startswith("{") else None
        if inner is not None and candidate[len(inner) :].strip():
            candidate = inner  # chatter after the object
    cleaned, open_brackets, in_string = _scan(candidate)
    if in_string:
        raise ValueError("the JSON ends inside a string")
    cleaned += "".join(reversed(open_brackets))
    return json.loads(cleaned), True


class ToolBox:
    """The tools one job offers, with their schema validators (compiled once, on first use)."""

    def __init__(self, tools: list[ToolSpec]) -> None:
        self.tools = {t["name"]: t for t in tools}
        self._validators: dict[str, Any] = {}

    def _validator(self, name: str) -> Any:
        if name not in self._validators:
            schema = self.tools[name].get("parameters") or {}
            # The API checked the schema against its metaschema (api/engine/tools.py): not again here,
            # it costs far more than the validation. A schema that is broken anyway fails in check().
            self._validators[name] = jsonschema.validators.validator_for(schema)(schema)
        return self._validators[name]

    def decode(self, raw: str) -> tuple[ToolCall, bool]:
        """The call written in ``raw`` (between the tags), with a new id, and whether it was
        repaired; :class:`CallError` if it is not a valid call of one of these tools."""
        try:
            value, repaired = loads_lenient(raw)
        except ValueError as exc:
            raise CallError(f"a tool call was not valid JSON ({exc})") from None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise CallError('a tool call was not a JSON object with a "name" and "arguments"')
        name = value["name"]
        if name not in self.tools:
            known = ", ".join(self.tools) or "none"
            raise CallError(f"you called the tool {name!r}, which is not available (available tools: {known})")
        arguments = value.get("arguments", value.get("parameters"))
        if arguments is None:
            arguments, repaired = {}, True
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                raise CallError(f"the arguments of {name} were not a JSON object") from None
            repaired = True
        if not isinstance(arguments, dict):
            raise CallError(f"the arguments of {name} were not a JSON object")
        self.check(name, arguments)
        call: ToolCall = {"id": new_call_id(), "name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
        return call, repaired

    def check(self, name: str, arguments: dict[str, Any]) -> None:
        """CallError if ``arguments`` fail the tool's JSON Schema."""
        validator = self._validator(name)
        if validator is None:
            return
        try:
            error = best_match(validator.iter_errors(arguments))
        except Exception:  # noqa: BLE001  a $ref that cannot be resolved, a bad regex: cannot check, so pass
            return
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            at = f" at '{where}'" if where else ""
            raise CallError(f"the arguments of {name} do not match its schema{at}: {error.message}")
