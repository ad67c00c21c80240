"""The OpenAI Agents SDK's ``Runner.run`` against a base URL, in its own process.

Why a separate process: the test runs it with the egress trap's proxy variables and the SDK's
own switches in its environment (as a user would), so a trace export or any other call that
would leave the machine is seen by the trap; and the SDK's process-wide defaults stay out of the
test session. Prints one JSON object for tests/test_agents.py.

Usage: python openai_agents_run.py <plain|tool> <base_url ending in /v1> <api_key> <model> <prompt>
``tool`` gives the agent one function tool, get_weather(city) -> "sunny in <city>".
"""

from __future__ import annotations

import asyncio
import json
import sys

from agents import Agent, Runner, function_tool, set_default_openai_client
from openai import AsyncOpenAI


async def main() -> None:
    mode, base_url, api_key, model, prompt = sys.argv[1:6]
    # How the SDK's docs point it at another OpenAI-compatible server; the model stays a name, so
    # the SDK picks its default model class (the Responses API). Tracing is left to the environment
    # (OPENAI_AGENTS_DISABLE_TRACING), as a user would set it.
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60))
    executed: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        executed.append(city)
        return f"sunny in {city}"

    agent = Agent(
        name="Assistant",
        instructions="You are a helpful assistant.",
        model=model,
        tools=[get_weather] if mode == "tool" else [],
    )
    result = await Runner.run(agent, prompt, max_turns=4)
    items = [item.type for item in result.new_items]
    print(json.dumps({"final_output": result.final_output, "executed": executed, "items": items}))


if __name__ == "__main__":
    asyncio.run(main())
