"""Turn an Anthropic Messages body into the engine's :class:`ChatCall`.

Blocks map to the engine's turns: ``text`` joined per message, ``tool_use`` to the assistant
turn's calls, each ``tool_result`` to a ``tool`` turn (in the order given, before the text of
the same user message), ``thinking`` dropped (an earlier answer's reasoning is not sent back
upstream), the last ``image`` of the conversation to the job's one image. ``tool_choice``
``any`` is the engine's ``required``, ``tool`` a named function.
"""

from __future__ import annotations

from typing import Any

import orjson

from api.dialects.bodies import last_image, parse_body, resolve_model
from api.dialects.messages.schema import (
    TYPES_HINT,
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from api.engine.call import ChatCall, finish_call
from api.engine.tools import check_schema, check_tool_choice
from shared.errors import InvalidRequest
from shared.messages import ToolCall, ToolChoice, ToolSpec, Turn
from shared.models import ModelTable
from shared.settings import Settings

#: Stop sequences per request: each one is looked for in every delta (see api.engine.shaping).
MAX_STOP_SEQUENCES = 16


def parse_messages(body: Any, settings: Settings, models: ModelTable) -> tuple[ChatCall, bool]:
    """The call, and whether the answer shows its reasoning (``thinking`` neither disabled nor
    ``display: "omitted"``, as Claude Code asks)."""
    req = parse_body(MessagesRequest, body, types_hint=TYPES_HINT)
    stop = [s for s in req.stop_sequences or [] if s]
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"stop_sequences takes at most {MAX_STOP_SEQUENCES} sequences.",
            param="stop_sequences",
            code="too_many_stop_sequences",
        )
    call = _call(req, settings, models, stream=bool(req.stream))
    call.stop = stop
    call.max_tokens = req.max_tokens
    thinking = req.thinking
    hidden = thinking is not None and (thinking.type == "disabled" or thinking.display == "omitted")
    return finish_call(call, settings=settings), not hidden


def parse_count_tokens(body: Any, settings: Settings, models: ModelTable) -> ChatCall:
    """The call ``count_tokens`` estimates (the same prompt ``/v1/messages`` would send)."""
    req = parse_body(CountTokensRequest, body, types_hint=TYPES_HINT)
    return finish_call(_call(req, settings, models, stream=False), settings=settings)


def _call(req: CountTokensRequest, settings: Settings, models: ModelTable, *, stream: bool) -> ChatCall:
    model = resolve_model(models, req.model)
    turns: list[Turn] = []
    if isinstance(req.system, str):
        turns.append({"role": "system", "text": req.system})
    elif req.system:
        turns.append({"role": "system", "text": "\n".join(b.text for b in req.system)})
    image: tuple[str, str] | None = None
    for i, message in enumerate(req.messages):
        if isinstance(message.content, str):
            turns.append({"role": message.role, "text": message.content})
            continue
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ImageBlock):
                image = (_image_url(block), f"{where}.source")
            elif isinstance(block, ToolUseBlock):
                calls.append({"id": block.id, "name": block.name, "arguments": orjson.dumps(block.input).decode()})
            elif isinstance(block, ToolResultBlock):
                turns.append(_tool_turn(block))
                for k, part in enumerate(block.content if isinstance(block.content, list) else []):
                    if isinstance(part, ImageBlock):
                        image = (_image_url(part), f"{where}.content[{k}].source")
        turn: Turn = {"role": message.role, "text": "\n".join(texts)}
        if calls:
            turn["tool_calls"] = calls
        if texts or calls:
            turns.append(turn)
    call = ChatCall(
        model=model.id,
        upstream_model=model.upstream,
        turns=turns,
        stream=stream,
        dialect="messages",
        reasoning=model.id in settings.reasoning_model_ids,
    )
    _tools(call, req)
    if image is not None:
        last_image(call, image[0], image[1], settings.image_max_bytes)
    return call


def _image_url(block: ImageBlock) -> str:
    source = block.source
    if source.type == "base64":
        return f"data:{source.media_type};base64,{source.data}"
    return source.url


def _tool_turn(block: ToolResultBlock) -> Turn:
    content = block.content
    if isinstance(content, list):
        text = "\n".join(p.text for p in content if isinstance(p, TextBlock))
    else:
        text = content or ""
    turn: Turn = {"role": "tool", "text": text, "tool_call_id": block.tool_use_id}
    if block.is_error:
        turn["is_error"] = True
    return turn


def _tools(call: ChatCall, req: CountTokensRequest) -> None:
    # Server tools (web search, code execution…) run on Anthropic's side: there is nothing here
    # to run them, so they are left out and the model is never offered them.
    for i, tool in enumerate(req.tools or []):
        if tool.input_schema is not None:
            check_schema(tool.input_schema, param=f"tools[{i}].input_schema")
            call.tools.append(
                ToolSpec(name=tool.name, description=tool.description or "", parameters=tool.input_schema)
            )
    choice = req.tool_choice
    if choice is None:
        check_tool_choice(call.tool_choice, call.tools, param="tool_choice")  # duplicate names, too
        return
    if choice.disable_parallel_tool_use:
        call.parallel_tool_calls = False
    mapped: ToolChoice
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type 'tool' needs a 'name'.", param="tool_choice.name")
        mapped = {"name": choice.name}
    else:
        mapped = {"auto": "auto", "any": "required", "none": "none"}[choice.type]  # type: ignore[assignment]
    call.tool_choice = check_tool_choice(mapped, call.tools, param="tool_choice")
