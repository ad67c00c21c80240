"""Fold a conversation into decopy's single ``entertext`` string.

decopy takes one text per job and keeps no history we can address, so the whole conversation
travels in that text. Layout (documented in docs/api.md and docs/tools.md):

- A conversation of exactly one user turn, without tools or an output format, is sent as that
  turn's text, unchanged.
- Otherwise every turn becomes a block ``<Label>: <text>``, blocks separated by one blank
  line, in the conversation's order. Labels: ``System`` (system and developer messages),
  ``User``, ``Assistant``, ``Tool`` (tool and function results); a turn's ``name`` is added
  in parentheses, e.g. ``User (alice): ...``. Empty turns are left out.
- With tools (:mod:`shared.tools.convention`): a ``Tools:`` block (the instruction, then the
  tools) comes right after the leading system turns; an assistant turn's earlier calls follow
  its text as ``<tool_call>{"id": …, "name": …, "arguments": …}</tool_call>`` blocks; a tool
  result is labelled ``Tool (<call id>, <tool name>)``, with ``, error`` when the tool failed.
- With a JSON output format: an ``Output:`` block comes last.

Every dialect's parser produces the same :class:`~shared.messages.Turn` list, so this layout
is the same whichever API the client spoke.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.messages import OutputFormat, ToolChoice, ToolSpec, Turn
from shared.tools import convention

LABELS = {
    "system": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
}


def fold(
    turns: Sequence[Turn],
    *,
    tools: Sequence[ToolSpec] = (),
    tool_choice: ToolChoice = "auto",
    parallel_tool_calls: bool = True,
    output: OutputFormat | None = None,
    instruction: str = convention.DEFAULT_INSTRUCTION,
) -> str:
    """The ``entertext`` for a conversation (see the module docstring for the layout)."""
    emulated = bool(tools) or (output is not None and output["type"] != "text")
    has_calls = any(turn.get("tool_calls") or turn["role"] == "tool" for turn in turns)
    if not emulated and not has_calls:
        if len(turns) == 1 and turns[0]["role"] == "user" and not turns[0].get("name"):
            return turns[0].get("text", "")
        return "\n\n".join(_plain_blocks(turns))
    blocks: list[str] = []
    tools_block = convention.tools_block(list(tools), tool_choice, parallel_tool_calls, instruction) if tools else ""
    names: dict[str, str] = {}  # call id -> tool name, to label the results
    for turn in turns:
        if tools_block and turn["role"] != "system":
            blocks.append(tools_block)
            tools_block = ""
        calls = turn.get("tool_calls") or []
        for call in calls:
            names[call["id"]] = call["name"]
        if turn["role"] == "tool":
            call_id = turn.get("tool_call_id", "")
            label = convention.result_label(
                call_id, names.get(call_id) or turn.get("name"), turn.get("is_error", False)
            )
            blocks.append(f"{label}: {turn.get('text', '').strip() or '(no output)'}")
            continue
        text = turn.get("text", "")
        if calls:
            rendered = "\n".join(convention.render_call(c) for c in calls)
            text = f"{text.rstrip()}\n{rendered}" if text.strip() else rendered
        if not text.strip():
            continue
        blocks.append(f"{_label(turn)}: {text}")
    if tools_block:  # only system turns
        blocks.append(tools_block)
    if output is not None and (block := convention.output_block(output)):
        blocks.append(block)
    return "\n\n".join(blocks)


def _label(turn: Turn) -> str:
    label = LABELS[turn["role"]]
    name = turn.get("name")
    return f"{label} ({name})" if name else label


def _plain_blocks(turns: Sequence[Turn]) -> list[str]:
    return [f"{_label(turn)}: {turn.get('text', '')}" for turn in turns if turn.get("text", "").strip()]
