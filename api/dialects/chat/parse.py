"""Turn a chat-completions body into the engine's :class:`ChatCall`: validated, refused or accepted.

What the upstream cannot do is refused here with a 400 naming the field, or emulated by the
gateway (``stop``, ``max_tokens``, and ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` /
``response_format``: see ``shared.tools``); knobs it has no use for are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from api.dialects.chat.schema import ChatCompletionRequest, ChatMessage, ImagePart, TextPart
from api.engine.call import ChatCall, finish_call
from api.engine.images import decode_data_url
from api.engine.shaping import MAX_STOP_CHARS
from api.engine.tools import check_schema, check_tool_choice
from shared.errors import InvalidRequest, ModelNotFound, Unsupported
from shared.messages import OutputFormat, Role, ToolChoice, ToolSpec, Turn
from shared.models import ModelTable
from shared.settings import Settings


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    skip_tag = False  # after "tagged-union[...]" and an index, pydantic names the branch (the tag)
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if "tagged-union" in str(part):
            skip_tag = True
            continue
        if part in {"str", "function-after"} or "[" in str(part):
            continue  # pydantic's union branch names say nothing to a client
        if skip_tag and out.endswith("]"):
            skip_tag = False
            continue
        out += f".{part}" if out else str(part)
    return out


def validation_error(exc: ValidationError) -> InvalidRequest:
    # A union (content: str | list of parts) reports one error per branch, the str branch first;
    # the deepest error is the one about what the client actually sent (e.g. a part of a list).
    errors = exc.errors(include_url=False)
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    param = _loc(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "union_tag_invalid":
        msg = "Unknown content part type; the gateway takes parts of type 'text' and 'image_url'"
    elif first.get("type") == "union_tag_not_found":
        msg = "A content part needs a 'type': 'text' or 'image_url'"
    elif first.get("type") == "string_type" and any(
        e.get("type") == "list_type" and _loc(tuple(e.get("loc", ()))) == param for e in errors
    ):
        msg = "Input should be a string or a list of content parts"
    where = f" at '{param}'" if param else ""
    return InvalidRequest(f"Invalid request body{where}: {msg}.", param=param or None, code="invalid_value")


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    if req.n is not None and req.n > 1:
        raise Unsupported("n > 1 is not supported: the upstream returns one answer per request.", param="n")
    if req.functions:
        raise Unsupported(
            "'functions' is not supported: the upstream cannot call functions; use 'tools' (emulated).",
            param="functions",
        )
    if req.function_call is not None and req.function_call not in ("none", "auto"):
        raise Unsupported(
            "'function_call' is not supported: the upstream cannot call functions; use 'tool_choice' (emulated).",
            param="function_call",
        )
    if req.logprobs or req.top_logprobs:
        raise Unsupported(
            "logprobs are not supported: the upstream reports none.",
            param="logprobs" if req.logprobs else "top_logprobs",
        )
    extra = req.model_extra or {}
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise Unsupported(
            "Audio output is not supported: the upstream answers in text only.",
            param="audio" if extra.get("audio") is not None else "modalities",
        )


def parse_chat(body: Any, settings: Settings, models: ModelTable) -> ChatCall:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    model = models.resolve(req.model)
    if model is None:
        raise ModelNotFound(
            f"The model '{req.model}' does not exist. Available: {', '.join(models.ids())} "
            "(GET /v1/models lists every accepted name).",
            param="model",
        )
    _refuse_unsupported(req)
    if not any(m.role == "user" for m in req.messages):
        raise InvalidRequest(
            "messages must contain at least one message with role 'user'.", param="messages", code="invalid_value"
        )

    image, image_url, image_param = None, None, None
    for i, message in enumerate(req.messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    # The upstream takes one image per job: the last one in the conversation wins.
                    image_param = f"messages[{i}].content[{j}].image_url.url"
                    image_url = part.image_url.url
    if image_url is not None and image_param is not None:
        if image_url.startswith("data:"):
            image = decode_data_url(image_url, param=image_param, max_bytes=settings.image_max_bytes)
            image_url = None
        elif not image_url.lower().startswith(("http://", "https://")):
            raise InvalidRequest(
                "An image URL must be a data: URL or an http(s) URL.", param=image_param, code="invalid_image"
            )

    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    stop = [s for s in stop if s]
    if len(stop) > 4:
        raise InvalidRequest("stop takes at most 4 sequences.", param="stop", code="too_many_stop_sequences")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise InvalidRequest(
            f"Each stop sequence may be at most {MAX_STOP_CHARS} characters long.", param="stop", code="stop_too_long"
        )
    tools = _tools(req)
    call = ChatCall(
        model=model.id,
        upstream_model=model.upstream,
        turns=[_turn(m) for m in req.messages],
        tools=tools,
        tool_choice=_tool_choice(req, tools),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        output=_output(req),
        image=image,
        stream=bool(req.stream),
        include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
        stop=stop,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        image_url=image_url,
        image_param=image_param,
        reasoning=model.id in settings.reasoning_model_ids,
    )
    return finish_call(call, settings=settings)


_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def message_text(message: ChatMessage) -> str:
    """The text of one message (text parts joined by newlines; image parts carry no text)."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if isinstance(part, TextPart))


def _turn(message: ChatMessage) -> Turn:
    turn: Turn = {"role": _ROLES[message.role], "text": message_text(message)}
    if message.name:
        turn["name"] = message.name
    if message.role == "assistant" and message.tool_calls:
        turn["tool_calls"] = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls
        ]
    if message.role == "tool" and message.tool_call_id:
        turn["tool_call_id"] = message.tool_call_id
    return turn


def _tools(req: ChatCompletionRequest) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or []):
        fn = tool.function
        parameters = fn.parameters if fn.parameters is not None else {"type": "object", "properties": {}}
        check_schema(parameters, param=f"tools[{i}].function.parameters")
        tools.append({"name": fn.name, "description": fn.description or "", "parameters": parameters})
    return tools


def _tool_choice(req: ChatCompletionRequest, tools: list[ToolSpec]) -> ToolChoice:
    choice = req.tool_choice
    value: ToolChoice = (
        "auto" if choice is None else choice if isinstance(choice, str) else {"name": choice.function.name}
    )
    return check_tool_choice(value, tools, param="tool_choice")


def _output(req: ChatCompletionRequest) -> OutputFormat | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object", "name": None, "schema": None, "strict": False}
    if fmt.json_schema is None:
        raise InvalidRequest(
            "response_format of type 'json_schema' needs a 'json_schema' object with a 'name' and a 'schema'.",
            param="response_format.json_schema",
        )
    schema = fmt.json_schema.schema_
    if schema is not None:
        check_schema(schema, param="response_format.json_schema.schema")
    return {
        "type": "json_schema",
        "name": fmt.json_schema.name,
        "schema": schema,
        "strict": bool(fmt.json_schema.strict),
    }
