"""Turn a Responses API body into the engine's :class:`ChatCall`.

``instructions`` becomes the system turn, ahead of the stored conversation a
``previous_response_id`` continues (its turns come from :mod:`api.dialects.responses.store`),
then this request's items: messages (``developer`` is a system turn), ``function_call`` items
as the assistant's calls, ``function_call_output`` items as tool turns; ``reasoning`` items are
dropped. Function tools are offered; the hosted tools (web search, file search, computer use…)
run on OpenAI's side only and are left out. ``background`` is refused: the gateway answers
while the client waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from api.dialects.bodies import last_image, parse_body, resolve_model
from api.dialects.responses.schema import (
    TYPES_HINT,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    Refusal,
    ResponsesRequest,
)
from api.engine.call import ChatCall, finish_call
from api.engine.tools import check_schema, check_tool_choice
from shared.errors import InvalidRequest, Unsupported
from shared.messages import OutputFormat, Role, ToolCall, ToolChoice, ToolSpec, Turn
from shared.models import ModelTable
from shared.settings import Settings

_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


@dataclass
class ResponsesCall:
    """A parsed request: the engine's call, and what the response object echoes or stores."""

    call: ChatCall
    request: ResponsesRequest
    #: This request's own turns (without instructions or history): stored for a continuation.
    turns: list[Turn] = field(default_factory=list)
    #: This request's input as items (a string input becomes one user message item).
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def store(self) -> bool:
        return self.request.store is not False  # OpenAI's default is to store


def read_request(body: Any) -> ResponsesRequest:
    """The validated body (the route needs ``previous_response_id`` before the call is built)."""
    req = parse_body(ResponsesRequest, body, types_hint=TYPES_HINT)
    if req.background:
        raise Unsupported(
            "background is not supported: the gateway answers while the client waits.", param="background"
        )
    return req


def parse_responses(
    req: ResponsesRequest, settings: Settings, models: ModelTable, history: list[Turn] | None = None
) -> ResponsesCall:
    model = resolve_model(models, req.model)
    turns: list[Turn] = []
    image: tuple[str, str] | None = None
    items: list[dict[str, Any]]
    if isinstance(req.input, str):
        turns.append({"role": "user", "text": req.input})
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": req.input}]}]
    else:
        items = [item.model_dump(by_alias=True, exclude_none=True) for item in req.input]
        for i, item in enumerate(req.input):
            if isinstance(item, MessageItem):
                text, found = _parts(item.content, f"input[{i}].content")
                image = found or image
                turns.append({"role": _ROLES[item.role], "text": text})
            elif isinstance(item, FunctionCallItem):
                made = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments)
                if turns and turns[-1]["role"] == "assistant":  # parallel calls: one assistant turn
                    turns[-1].setdefault("tool_calls", []).append(made)
                else:
                    turns.append({"role": "assistant", "text": "", "tool_calls": [made]})
            elif isinstance(item, FunctionCallOutputItem):
                text, found = _parts(item.output, f"input[{i}].output")
                image = found or image
                turns.append({"role": "tool", "text": text, "tool_call_id": item.call_id})
    head: list[Turn] = [{"role": "system", "text": req.instructions}] if req.instructions else []
    call = ChatCall(
        model=model.id,
        upstream_model=model.upstream,
        turns=head + (history or []) + turns,
        stream=bool(req.stream),
        dialect="responses",
        max_tokens=req.max_output_tokens,
        reasoning=model.id in settings.reasoning_model_ids,
    )
    _tools(call, req)
    if req.text is not None and req.text.format is not None and req.text.format.type != "text":
        fmt = req.text.format
        if fmt.type == "json_schema":
            if fmt.schema_ is None:
                raise InvalidRequest("text.format of type 'json_schema' needs a 'schema'.", param="text.format.schema")
            check_schema(fmt.schema_, param="text.format.schema")
        call.output = OutputFormat(type=fmt.type, name=fmt.name, schema=fmt.schema_, strict=bool(fmt.strict))
    if image is not None:
        last_image(call, image[0], image[1], settings.image_max_bytes)
    return ResponsesCall(
        call=finish_call(call, param="input", settings=settings), request=req, turns=turns, items=items
    )


def _parts(content: str | list[Any], where: str) -> tuple[str, tuple[str, str] | None]:
    """The text of a message's content, and its last image (URL, param) if any."""
    if isinstance(content, str):
        return content, None
    texts: list[str] = []
    image = None
    for j, part in enumerate(content):
        if isinstance(part, InputText | OutputText):
            texts.append(part.text)
        elif isinstance(part, Refusal):
            texts.append(part.refusal)
        elif isinstance(part, InputImage):
            image = (part.image_url, f"{where}[{j}].image_url")
    return "\n".join(texts), image


def _tools(call: ChatCall, req: ResponsesRequest) -> None:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or []):
        if tool.get("type") != "function":
            continue  # a hosted tool: nothing here can run it (see the module docstring)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("A function tool needs a 'name'.", param=f"tools[{i}].name")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        check_schema(parameters, param=f"tools[{i}].parameters")
        description = tool.get("description")
        specs.append(
            ToolSpec(name=name, description=description if isinstance(description, str) else "", parameters=parameters)
        )
    call.tools = specs
    if req.parallel_tool_calls is False:
        call.parallel_tool_calls = False
    choice = req.tool_choice
    mapped: ToolChoice
    if choice is None:
        check_tool_choice(call.tool_choice, specs, param="tool_choice")  # duplicate names, too
        return
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or a function.", param="tool_choice")
        mapped = choice  # type: ignore[assignment]
    elif choice.get("type") == "function" and isinstance(choice.get("name"), str):
        mapped = {"name": choice["name"]}
    else:
        raise Unsupported(
            "tool_choice: only 'auto', 'none', 'required' and a function tool are supported.", param="tool_choice"
        )
    call.tool_choice = check_tool_choice(mapped, specs, param="tool_choice")
