"""Fold an OpenAI conversation into decopy's single ``entertext`` string.

decopy takes one text per job and keeps no history we can address, so the whole conversation
travels in that text. Layout (documented in docs/api.md):

- A conversation of exactly one user message is sent as that message's text, unchanged.
- Otherwise every message becomes a block ``<Label>: <text>``, blocks separated by one blank
  line, in the conversation's order. Labels: ``System`` (system and developer messages),
  ``User``, ``Assistant``, ``Tool`` (tool and function results); a message's ``name`` is added
  in parentheses, e.g. ``User (alice): ...``. Text parts of one message are joined by a newline;
  empty messages are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.dialects.chat.schema import ChatMessage, TextPart

LABELS = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
    "function": "Tool",
}


def message_text(message: ChatMessage) -> str:
    """The text of one message (text parts joined by newlines; image parts carry no text)."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if isinstance(part, TextPart))


def fold(messages: Sequence[ChatMessage]) -> str:
    """The ``entertext`` for a conversation (see the module docstring for the layout)."""
    if len(messages) == 1 and messages[0].role == "user" and not messages[0].name:
        return message_text(messages[0])
    blocks = []
    for message in messages:
        text = message_text(message)
        if not text.strip():
            continue
        label = LABELS[message.role]
        if message.name:
            label = f"{label} ({message.name})"
        blocks.append(f"{label}: {text}")
    return "\n\n".join(blocks)
