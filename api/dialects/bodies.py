"""Validating a dialect's request body with its pydantic model (one 400 naming the field), and its model.

Shared by the Responses, Messages and Completions dialects (chat completions keeps its own
wording in :mod:`api.dialects.chat.parse`). Each caller says which part or item types it takes,
so an unknown ``type`` is answered with the list a client can fix its request by.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.engine.call import ChatCall
from api.engine.images import decode_data_url
from shared.errors import InvalidRequest, ModelNotFound
from shared.models import Model, ModelTable

M = TypeVar("M", bound=BaseModel)


def _loc(loc: tuple[Any, ...]) -> str:
    """``messages[0].content[1].source`` from pydantic's location, without its union branch names."""
    out = ""
    skip_tag = False  # after "tagged-union[...]" and an index, pydantic names the branch (the tag)
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if "tagged-union" in text:
            skip_tag = True
            continue
        if text in {"str", "function-after", "list", "none"} or "[" in text:
            continue  # pydantic's union branch names say nothing to a client
        if skip_tag and out.endswith("]"):
            skip_tag = False
            continue
        out += f".{text}" if out else text
    return out


def parse_body(model: type[M], body: Any, *, types_hint: str) -> M:
    """``body`` validated as ``model``; otherwise a 400 naming the deepest field at fault.

    ``types_hint`` completes the message for an unknown or missing ``type`` of a part or item
    (e.g. ``"'text', 'image', 'tool_use', 'tool_result' and 'thinking'"``).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _error(exc, types_hint) from None


def _error(exc: ValidationError, types_hint: str) -> InvalidRequest:
    # A union (content: str | list of blocks) reports one error per branch; the deepest is the one
    # about what the client actually sent.
    errors = exc.errors(include_url=False)
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    param = _loc(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid value")
    kind = first.get("type")
    if kind == "union_tag_invalid":
        msg = f"Unknown type; the gateway takes {types_hint}"
    elif kind == "union_tag_not_found":
        msg = f"A 'type' is needed: {types_hint}"
    elif kind == "string_type" and any(
        e.get("type") == "list_type" and _loc(tuple(e.get("loc", ()))) == param for e in errors
    ):
        msg = "Input should be a string or a list"
    where = f" at '{param}'" if param else ""
    return InvalidRequest(f"Invalid request body{where}: {msg}.", param=param or None, code="invalid_value")


def resolve_model(models: ModelTable, name: str) -> Model:
    """The configured model ``name`` stands for; a 404 naming the accepted ids otherwise."""
    model = models.resolve(name)
    if model is None:
        raise ModelNotFound(
            f"The model '{name}' does not exist. Available: {', '.join(models.ids())} "
            "(GET /v1/models lists every accepted name).",
            param="model",
        )
    return model


def last_image(call: ChatCall, url: str | None, param: str | None, max_bytes: int) -> None:
    """Give ``call`` the conversation's last image (the upstream takes one per job).

    A ``data:`` URL is decoded now (its bytes sniffed); an http(s) URL is fetched by the engine
    through its SSRF guard (:mod:`api.engine.image_fetch`) before the job is queued.
    """
    if url is None or param is None:
        return
    if url.startswith("data:"):
        call.image = decode_data_url(url, param=param, max_bytes=max_bytes)
    elif url.lower().startswith(("http://", "https://")):
        call.image_url, call.image_param = url, param
    else:
        raise InvalidRequest("An image URL must be a data: URL or an http(s) URL.", param=param, code="invalid_image")
