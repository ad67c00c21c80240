"""How the simulator answers in ``make demo``: like a model would, so a newcomer sees the gateway work.

The tests drive the simulator with directives (``@@sim@@ {...}``, see ``tests/decopy_sim.py``);
a person trying the demo sends none, and an answer that only echoes them ("Hello! You said: …")
shows neither the folding of the conversation, nor reasoning, nor tool calls. This persona is
used only by ``python -m tests.decopy_sim --demo`` and only for requests without a directive.

What it does with the text decopy would receive (``entertext``) and the upstream model:

- **varied replies**, chosen from the last user message and the conversation folded before it
  (a greeting, a question, a request for code or a list, "what is my name?" answered from an
  earlier message, a note on how many messages were folded and what the system message asked);
- **reasoning** for ``DeepSeek-R1``: ``<think>…</think>`` before the answer, as decopy sends it;
- **a tool call** when tools are offered: the prompt holds the calling convention (the literal
  ``<tool_call>``) and at least one tool definition. Definitions are found tolerantly, whatever
  the folding's layout: every JSON object in the prompt with a ``name`` (or a ``function`` with
  one) and no ``arguments`` (that would be an example call) counts, and failing any, a
  ``"name": "…"`` pair outside a ``<tool_call>`` block. The tool whose name and description share
  most words with the last user message is called, with its required arguments filled from
  their JSON Schema types. When the conversation already ends in a tool's result (a ``Tool``
  block, or a ``<tool_response>``/``<tool_result>`` block, after the last user message) it
  answers in text instead, so an agent's loop ends.

Answers are deterministic for a given prompt (seeded by its hash), and streamed in small pieces
that may split the ``<think>`` and ``<tool_call>`` tags, as a real upstream's would.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

LABEL_RE = re.compile(r"^(System|Developer|User|Assistant|Tool)\b[^:\n]{0,80}:[ \t]?", re.M)
TOOL_RESULT_RE = re.compile(r"^Tool\b[^:\n]{0,80}:|<tool_(?:response|result)\b", re.M)
USER_RE = re.compile(r"^User\b[^:\n]{0,80}:", re.M)
CALL_BLOCK_RE = re.compile(r"<tool_call>.*?</tool_call>", re.S)
NAME_PAIR_RE = re.compile(r'"name"\s*:\s*"([A-Za-z_][\w.-]{0,63})"')
IDENTIFIER_RE = re.compile(r"[A-Za-z_][\w.-]{0,63}")
NAME_RE = re.compile(r"\b(?:my name is|i am|i'm|call me)\s+([A-Z][\w-]{1,30})", re.I)
WORD_RE = re.compile(r"[a-z0-9]+")
PLACEHOLDERS = frozenset({"tool", "tool_name", "name", "function", "function_name", "your_tool", "example"})
TOOL_PROMPT_MARKER = "<tool_call>"
REASONING_MODELS = frozenset({"DeepSeek-R1"})


@dataclass
class Tool:
    name: str
    description: str = ""
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversation:
    """The folded conversation, read back: (label, text) blocks; one unlabelled block for a lone message."""

    blocks: list[tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> Conversation:
        marks = list(LABEL_RE.finditer(text))
        if not marks:
            return cls([("User", text.strip())])
        blocks = [
            (m.group(1), text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip())
            for i, m in enumerate(marks)
        ]
        return cls(blocks)

    def last(self, label: str) -> str:
        return next((t for lab, t in reversed(self.blocks) if lab == label), "")

    def earlier(self) -> int:
        return max(0, len(self.blocks) - 1)


def _objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text`` (nested ones included), in order."""
    decoder, found = json.JSONDecoder(), []
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _as_tool(obj: dict[str, Any]) -> Tool | None:
    if "arguments" in obj:  # an example call, not a definition
        return None
    function = obj.get("function")
    inner: dict[str, Any] = function if isinstance(function, dict) else obj
    name = inner.get("name")
    if not isinstance(name, str) or not IDENTIFIER_RE.fullmatch(name) or name.lower() in PLACEHOLDERS:
        return None
    schema = inner.get("parameters") or inner.get("input_schema") or inner.get("inputSchema") or {}
    description = inner.get("description")
    return Tool(name, description if isinstance(description, str) else "", schema if isinstance(schema, dict) else {})


def offered_tools(text: str) -> list[Tool]:
    """The tools a prompt offers (empty when it holds no ``<tool_call>`` convention)."""
    if TOOL_PROMPT_MARKER not in text:
        return []
    outside_calls = CALL_BLOCK_RE.sub(" ", text)
    tools: dict[str, Tool] = {}
    for obj in _objects(outside_calls):
        tool = _as_tool(obj)
        if tool is not None and tool.name not in tools:
            tools[tool.name] = tool
    if not tools:
        for name in NAME_PAIR_RE.findall(outside_calls):
            if name.lower() not in PLACEHOLDERS:
                tools.setdefault(name, Tool(name))
    return list(tools.values())


def awaits_answer_after_tool(text: str) -> bool:
    """Whether the conversation ends in a tool's result (after the last user message)."""
    results = [m.start() for m in TOOL_RESULT_RE.finditer(text)]
    users = [m.start() for m in USER_RE.finditer(text)]
    return bool(results) and (not users or results[-1] > users[-1])


STOPWORDS = frozenset("a an and at for from in is it me my of on the this that to what with".split())


def _words(text: str) -> set[str]:
    return set(WORD_RE.findall(text.lower().replace("_", " "))) - STOPWORDS


def pick_tool(tools: list[Tool], request: str) -> Tool:
    wanted = _words(request)
    return max(tools, key=lambda t: (len(wanted & _words(t.name + " " + t.description)), -tools.index(t)))


def _value(prop: str, schema: dict[str, Any], request: str) -> Any:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        return low if isinstance(low, int | float) else 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    low = prop.lower()
    capitalised = re.findall(r"\b[A-Z][a-z]{2,}\b", request.strip()[1:])  # a name, not the sentence's first word
    if any(w in low for w in ("city", "location", "place", "country")):
        return capitalised[-1] if capitalised else "Paris"
    if any(w in low for w in ("path", "file")):
        return "README.md"
    if any(w in low for w in ("command", "cmd")):
        return "ls"
    if "url" in low:
        return "https://example.com"
    return request.strip()[:80] or "example"


def arguments(tool: Tool, request: str) -> dict[str, Any]:
    """The tool's required arguments, each a plausible value of its schema's type."""
    props = tool.schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = tool.schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    return {n: _value(n, p if isinstance(p := props.get(n), dict) else {}, request) for n in names}


def _reply(conv: Conversation, model: str, rng: random.Random) -> str:
    said = conv.last("User") or conv.blocks[-1][1]
    low = said.lower()
    parts: list[str] = []
    names = NAME_RE.findall(" ".join(t for lab, t in conv.blocks[:-1] if lab == "User"))
    if one_word := re.search(r"reply with one word:\s*(\S+)", said, re.I):  # the doctor's prompt, for one
        parts.append(one_word.group(1))
    elif "my name" in low and "?" in said and names:
        parts.append(f"Your name is {names[-1]}: you told me earlier in this conversation.")
    elif re.search(r"\b(hi|hello|hey|bonjour|hallo)\b", low):
        parts.append(
            rng.choice(["Hello!", "Hi there!", "Hey!"])
            + f" I am the demo's stand-in for {model}, answering through the gateway's queue and workers."
        )
    elif re.search(r"\b(code|function|python|script)\b", low):
        parts.append("Here is a small example:\n\n```python\ndef greet(name: str) -> str:\n")
        parts.append('    return f"Hello, {name}!"\n```\n\nIt returns a greeting for the name you pass.')
    elif re.search(r"\b(list|steps|ideas|options)\b", low):
        items = rng.sample(["Start small.", "Measure first.", "Write the test.", "Read the logs.", "Ask why."], 3)
        parts.append("Three of them:\n\n" + "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)))
    elif said.rstrip().endswith("?"):
        topic = said.strip().rstrip("?")[-60:]
        parts.append(
            rng.choice(["Good question.", "Let me think about that.", "Here is a short answer."])
            + f" About “{topic}”: a real model would answer here; this is the simulator, so the words"
            " are made up, but they travelled the whole way: queue, worker, upstream, relay."
        )
    else:
        parts.append(
            rng.choice(["Noted.", "Understood.", "Got it."])
            + f" You said: “{said.strip()[-80:]}”. Try a question, a greeting, or ask for some code."
        )
    if conv.earlier():
        system = conv.last("System")
        parts.append(
            f"\n\n(I received this conversation as one text with {conv.earlier()} earlier message(s) folded in"
            + (f"; the system message said: “{system[:60]}”" if system else "")
            + ".)"
        )
    return "".join(parts)


def _thinking(conv: Conversation, tool: Tool | None) -> str:
    said = (conv.last("User") or conv.blocks[-1][1]).strip()
    plan = f"I should call {tool.name} first." if tool else "A short, friendly answer will do."
    return f"The user wrote “{said[:80]}”. The conversation has {len(conv.blocks)} message(s). {plan}"


def full_text(entertext: str, model: str) -> str:
    """The whole answer, before it is cut into pieces."""
    rng = random.Random(hashlib.sha256(f"{model}\n{entertext}".encode()).digest())
    conv = Conversation.parse(entertext)
    tools = [] if awaits_answer_after_tool(entertext) else offered_tools(entertext)
    request = conv.last("User") or conv.blocks[-1][1]
    tool = pick_tool(tools, request) if tools else None
    if tool is not None:
        call = json.dumps({"name": tool.name, "arguments": arguments(tool, request)})
        answer = f"I will use {tool.name} for that.\n<tool_call>{call}</tool_call>"
    elif TOOL_PROMPT_MARKER in entertext and awaits_answer_after_tool(entertext):
        result = TOOL_RESULT_RE.split(entertext)[-1].strip()[:120]
        answer = f"The tool answered: {result}. That is what I found."
    else:
        answer = _reply(conv, model, rng)
    if model in REASONING_MODELS:
        answer = f"<think>\n{_thinking(conv, tool)}\n</think>\n\n{answer}"
    return answer


def answer(entertext: str, model: str) -> list[str]:
    """The pieces of the stream: 2 to 12 characters each, so tags may be split anywhere."""
    text = full_text(entertext, model)
    rng = random.Random(len(text))
    pieces, i = [], 0
    while i < len(text):
        step = rng.randint(2, 12)
        pieces.append(text[i : i + step])
        i += step
    return pieces
