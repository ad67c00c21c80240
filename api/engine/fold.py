"""Fold a conversation into decopy's single ``entertext`` string.

decopy takes one text per job and keeps no history we can address, so the whole conversation
travels in that text. Layout (documented in docs/api.md):

- A conversation of exactly one user turn is sent as that turn's text, unchanged.
- Otherwise every turn becomes a block ``<Label>: <text>``, blocks separated by one blank
  line, in the conversation's order. Labels: ``System`` (system and developer messages),
  ``User``, ``Assistant``, ``Tool`` (tool and function results); a turn's ``name`` is added
  in parentheses, e.g. ``User (alice): ...``. Empty turns are left out.

Every dialect's parser produces the same :class:`~shared.messages.Turn` list, so this layout
is the same whichever API the client spoke.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.messages import Turn

LABELS = {
    "system": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
}


def fold(turns: Sequence[Turn]) -> str:
    """The ``entertext`` for a conversation (see the module docstring for the layout)."""
    if len(turns) == 1 and turns[0]["role"] == "user" and not turns[0].get("name"):
        return turns[0].get("text", "")
    blocks = []
    for turn in turns:
        text = turn.get("text", "")
        if not text.strip():
            continue
        label = LABELS[turn["role"]]
        name = turn.get("name")
        if name:
            label = f"{label} ({name})"
        blocks.append(f"{label}: {text}")
    return "\n\n".join(blocks)
