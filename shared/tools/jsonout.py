"""JSON output (``response_format`` / ``text.format``): find the JSON value in an answer and check it.

decopy cannot constrain its output, so the prompt asks for one JSON object (see
``shared.tools.convention.output_block``) and the worker reads the whole answer before anything
goes out: a JSON value inside a code fence or between sentences is taken out of it
(:func:`extract`), checked (an object for ``json_object``; valid against the schema for
``json_schema``), and only then sent, re-serialised. That is why a JSON answer's first token
comes when the whole answer is there (docs/tools.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from shared.messages import OutputFormat
from shared.tools.repair import loads_lenient

_FENCED = re.compile(r"(`{3,}|~{3,})[^\n]*\n(.*?)\n\s*\1", re.S)


class OutputError(ValueError):
    """The answer holds no acceptable JSON value; the message says why, for the correction."""


def extract(text: str) -> tuple[Any, bool]:
    """The JSON value in an answer, and whether it had to be dug out or repaired."""
    stripped = text.strip()
    try:
        return json.loads(stripped), False
    except ValueError:
        pass
    for m in _FENCED.finditer(stripped):
        try:
            return loads_lenient(m.group(2))[0], True
        except ValueError:
            continue
    try:
        return loads_lenient(stripped)[0], True
    except ValueError as exc:
        raise OutputError(f"the answer was not one JSON object ({exc})") from None


def check(text: str, output: OutputFormat) -> tuple[str, bool]:
    """The answer as the JSON text to send, and whether it was repaired; :class:`OutputError` if none."""
    value, repaired = extract(text)
    schema = output.get("schema")
    if not isinstance(value, dict) and (output["type"] == "json_object" or schema is None):
        raise OutputError("the answer was JSON but not an object")  # a schema may ask for another type
    if output["type"] == "json_schema" and schema is not None:
        try:
            error = best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
        except Exception:  # noqa: BLE001  an unusable schema (checked at the API): nothing to check against
            error = None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            at = f" at '{where}'" if where else ""
            raise OutputError(f"the JSON answer does not match the schema{at}: {error.message}")
    return json.dumps(value, ensure_ascii=False), repaired
