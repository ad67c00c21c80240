"""Checks every dialect makes of the tools and output format a client sends (before any job).

A tool's schema that is not a valid JSON Schema, duplicate tool names, or a tool choice that
names a tool not offered would make the worker's validation meaningless or the answer
impossible: each is a 400 that names the field, in the dialect's own error shape.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import jsonschema
import orjson

from shared.errors import InvalidRequest
from shared.messages import ToolChoice, ToolSpec

#: Schemas already found valid, by their canonical JSON: agents send the same tools on every
#: request, and checking one against its metaschema costs ~0.5 ms (hashing it, ~1 µs per KB).
_VALID: OrderedDict[bytes, None] = OrderedDict()
_VALID_MAX = 512


def check_schema(schema: Any, *, param: str) -> None:
    """400 unless ``schema`` is a JSON Schema object the validator can use."""
    if not isinstance(schema, dict):
        raise InvalidRequest("A JSON Schema must be an object.", param=param, code="invalid_schema")
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits: check it every time
        key = b""
    if key and key in _VALID:
        _VALID.move_to_end(key)
        return
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        at = f" at '{where}'" if where else ""
        raise InvalidRequest(
            f"Not a valid JSON Schema{at}: {exc.message}.", param=param, code="invalid_schema"
        ) from None
    if key:
        _VALID[key] = None
        if len(_VALID) > _VALID_MAX:
            _VALID.popitem(last=False)


def check_tool_choice(choice: ToolChoice, tools: list[ToolSpec], *, param: str) -> ToolChoice:
    """The choice, checked against the tools offered (and the tools' names, for duplicates)."""
    names = [t["name"] for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise InvalidRequest(f"Two tools are named {duplicate!r}; tool names must be unique.", param="tools")
    if isinstance(choice, dict):
        if choice["name"] not in names:
            raise InvalidRequest(
                f"{param} names the tool {choice['name']!r}, which is not among the tools offered.", param=param
            )
    elif choice == "required" and not tools:
        raise InvalidRequest(f"{param} 'required' needs at least one tool in 'tools'.", param=param)
    return choice
