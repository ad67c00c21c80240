"""What tool-call emulation adds to a stream's CPU, measured on the pure pieces (no processes).

A stream with tools goes through :class:`shared.tools.reader.AnswerReader` in the worker (the
streaming parser, then repair and schema validation of each call); a request with tools has its
schemas checked and its tools folded by the API. A request without tools pays none of this (one
check per job picks the plain path). ``python -m bench.tools_cpu`` prints, per case, the CPU per
stream and per upstream piece; docs/tools.md quotes the figures. The Claude Code tool set is read
from ``--tools-json`` (a JSON list of Anthropic tools, e.g. a captured request's ``tools``) when given.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from api.engine.tools import _VALID, check_schema
from shared.messages import ChatJob, ToolSpec
from shared.tools.convention import DEFAULT_INSTRUCTION, tools_block
from shared.tools.reader import AnswerReader, Emulation

WEATHER: ToolSpec = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PROSE = "I will look that up for you right away, one moment please. " * 8
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def cpu_per_run(run: Callable[[], Any], repeat: int) -> float:
    """Seconds of this process's CPU per call of ``run``."""
    run()
    start = time.process_time()
    for _ in range(repeat):
        run()
    return (time.process_time() - start) / repeat


def pieces(text: str, size: int = 6) -> list[str]:
    """The text cut as decopy streams it: a few characters a piece."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def read_stream(emulation: Emulation, deltas: list[str]) -> None:
    reader = AnswerReader(emulation, may_retry=True)
    for delta in deltas:
        reader.feed(delta)
    reader.end()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--tools-json", help="a JSON list of Anthropic tools (name, description, input_schema)")
    args = parser.parse_args(argv)
    job: ChatJob = {
        "request_id": "bench",
        "model": "m",
        "upstream_model": "M",
        "prompt": "",
        "image": None,
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "output": None,
    }
    emulation = Emulation.of(job)
    assert emulation is not None
    for name, text in (("prose + one call", PROSE + CALL), ("prose only", PROSE * 4)):
        deltas = pieces(text)
        cpu = cpu_per_run(lambda d=deltas: read_stream(emulation, d), args.repeat)  # type: ignore[misc]
        print(
            f"{name}: {len(deltas)} pieces, {cpu * 1e6:.0f} µs per stream, {cpu / len(deltas) * 1e6:.1f} µs per piece"
        )
    cpu = cpu_per_run(lambda: read_stream(emulation, [CALL]), args.repeat)
    print(f"one call read, repaired if need be and validated: {cpu * 1e6:.0f} µs")
    if args.tools_json:
        with open(args.tools_json, encoding="utf-8") as f:
            raw = json.load(f)
        tools: list[ToolSpec] = [
            {"name": t["name"], "description": t.get("description", ""), "parameters": t.get("input_schema", {})}
            for t in raw
        ]
        _VALID.clear()
        start = time.process_time()
        for tool in tools:
            check_schema(tool["parameters"], param="tools")
        cold = time.process_time() - start

        def check_all() -> None:
            for tool in tools:
                check_schema(tool["parameters"], param="tools")

        warm = cpu_per_run(check_all, 200)
        fold = cpu_per_run(lambda: tools_block(tools, "auto", True, DEFAULT_INSTRUCTION), 200)
        size = len(tools_block(tools, "auto", True, DEFAULT_INSTRUCTION))
        print(
            f"{len(tools)} tools: schema check {cold * 1e3:.1f} ms first, {warm * 1e3:.2f} ms remembered; "
            f"fold {fold * 1e3:.2f} ms, {size} characters"
        )


if __name__ == "__main__":
    main()
