"""Real agent clients, end to end, against the gateway with the simulator as upstream.

Why: the gateway's Responses and Messages doors and its tool-call emulation exist so that
Codex CLI, Claude Code, the OpenAI Agents SDK, the Vercel AI SDK and the openai npm package work
unchanged. Each test runs the pinned client (tests/agents/package.json, the `test` extra) the way
a user would configure it (docs/agent-clients.md), scripts the simulator through a directive in
the user's prompt, and checks what the client itself reports: its printed answer, the tool it
ran, and, in the simulator's log, that the tool's output came back through the gateway.

Nothing may leave the machine: every client runs with its own switches off (telemetry, update
checks, error reports, tracing, plugin syncs) and with HTTP(S)_PROXY pointing at an egress trap
on 127.0.0.1 (NO_PROXY for 127.0.0.1 itself); Claude Code, Codex and the Agents SDK honour those
variables (measured), so any request meant for another host lands in the trap, and each test
asserts the trap saw none.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, directive, start_gateway

# A real agent turn (a CLI starting, two model round trips, a tool run) takes seconds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

AGENTS_DIR = Path(__file__).resolve().parent / "agents"
BIN = AGENTS_DIR / "node_modules" / ".bin"
MODEL = "decopy-deepseek-v3"
# Claude Code asks for its own model ids (claude-opus-…): the gateway maps them by pattern.
ALIASES = {"claude-*": MODEL}
# Variables of the machine that must not reach a client under test (a real key, another base URL).
_FOREIGN = ("ANTHROPIC_", "OPENAI_", "CLAUDE_", "CODEX_", "AI_SDK_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def tool_loop(name: str, arguments: dict[str, Any], answer: str) -> str:
    """The simulator's directive for a one-call agent loop: until a tool result is in the prompt
    it answers with one call of ``name`` (the gateway's ``<tool_call>`` convention), then with
    ``answer``."""
    return directive(call={"name": name, "arguments": arguments}, after_tool={"reply": [answer]})


# --- installs and the egress trap ----------------------------------------------------------------


@pytest.fixture(scope="session")
def agent_clients() -> Path:
    """tests/agents with its locked npm packages installed (``npm ci``, skipped when up to date)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the agent client tests: run `make chromium`")
    lock = AGENTS_DIR / "package-lock.json"
    installed = AGENTS_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=AGENTS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
    return AGENTS_DIR


class EgressTrap:
    """A TCP listener standing in for every host outside the machine: records the first line of
    whatever reaches it (``CONNECT api.example.com:443 HTTP/1.1``) and closes the connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="egress-trap", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first = b""
                self.seen.append(first.decode("latin-1") or "(connection without a request)")

    def close(self) -> None:
        self._sock.close()


def client_env(trap: EgressTrap, home: Path, **extra: str) -> dict[str, str]:
    """The environment a client runs with: the machine's, less keys and proxies of its own, a
    private HOME, and every proxy variable pointing at the trap (127.0.0.1 itself exempt)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_FOREIGN)}
    home.mkdir(parents=True, exist_ok=True)
    proxy = trap.url
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        HTTP_PROXY=proxy,
        HTTPS_PROXY=proxy,
        ALL_PROXY=proxy,
        http_proxy=proxy,
        https_proxy=proxy,
        all_proxy=proxy,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def described(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def agents_gateway() -> Iterator[Gateway]:
    gw = start_gateway({"MODEL_ALIASES": json.dumps(ALIASES)})
    yield gw
    gw.stop()


@dataclass
class Rig:
    """One test's gateway, egress trap and scratch directory, and how to run each client there."""

    gw: Gateway
    trap: EgressTrap
    tmp: Path
    tag: str
    #: Where the API's log stood when the test began (the module's tests run one after another).
    log_start: int = 0

    def prompts(self) -> list[str]:
        """The texts the simulator received for this test (the gateway's folded prompts), in order:
        one per upstream call (create-job; its get-job stream is logged separately)."""
        return [e["entertext"] for e in self.gw.sim_entries(self.tag) if e["kind"] == "create"]

    def answers(self) -> list[tuple[str, str, int]]:
        """What the gateway answered since the test began: (method, path, status) per request,
        from the API's access log."""
        out = []
        for line in self.gw.api_proc.log()[self.log_start :].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("logger") == "api.access":
                out.append((str(record.get("method")), str(record.get("path")), int(record.get("status", 0))))
        return out

    def workdir(self) -> Path:
        work = self.tmp / "work"
        work.mkdir(exist_ok=True)
        return work

    def codex(self, prompt: str) -> subprocess.CompletedProcess[str]:
        work = self.workdir()
        env = client_env(
            self.trap,
            self.tmp / "home",
            CODEX_HOME=str(codex_home(self.tmp, self.gw)),
            DECOPY_API_KEY=self.gw.api_key,
            NO_COLOR="1",
        )
        return run(
            [str(BIN / "codex"), "exec", "--skip-git-repo-check", "--color", "never", "-C", str(work), prompt],
            env,
            work,
        )

    def claude(self, prompt: str) -> subprocess.CompletedProcess[str]:
        env = client_env(
            self.trap,
            self.tmp / "home",
            ANTHROPIC_BASE_URL=self.gw.base_url,
            ANTHROPIC_API_KEY=self.gw.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            DISABLE_ERROR_REPORTING="1",
            DISABLE_AUTOUPDATER="1",
            CLAUDE_CODE_MAX_RETRIES="1",
        )
        return run([str(BIN / "claude"), "-p", prompt], env, self.workdir())

    def agents_sdk(self, mode: str, prompt: str) -> dict[str, Any]:
        # OPENAI_API_KEY is set (to the gateway key) on purpose: with it the SDK exports traces to
        # OpenAI unless its switch works, and the trap would see that.
        env = client_env(
            self.trap, self.tmp / "home", OPENAI_API_KEY=self.gw.api_key, OPENAI_AGENTS_DISABLE_TRACING="1"
        )
        cmd = [
            sys.executable,
            str(AGENTS_DIR / "openai_agents_run.py"),
            mode,
            self.gw.v1,
            self.gw.api_key,
            MODEL,
            prompt,
        ]
        return self._json(run(cmd, env, self.tmp))

    def node(self, script: str, *args: str) -> dict[str, Any]:
        """A Node script of tests/agents, given the gateway's /v1 URL, the key and the model before ``args``."""
        env = client_env(self.trap, self.tmp / "home")
        cmd = ["node", str(AGENTS_DIR / script), *args[:-1], self.gw.v1, self.gw.api_key, MODEL, args[-1]]
        return self._json(run(cmd, env, AGENTS_DIR, timeout=120))

    def _json(self, result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        assert result.returncode == 0, described(result)
        return dict(json.loads(result.stdout))


@pytest.fixture
def rig(agents_gateway: Gateway, tmp_path: Path, tag: str) -> Iterator[Rig]:
    trap = EgressTrap()
    yield Rig(agents_gateway, trap, tmp_path, tag, log_start=len(agents_gateway.api_proc.log()))
    trap.close()


def done_offline(rig: Rig) -> None:
    """The client's whole conversation went through the gateway as it should: every request it
    made was answered without an error (a client that silently retries a refused request in
    another shape would otherwise hide the refusal), and nothing tried to leave the machine."""
    answers = rig.answers()
    assert answers, "the gateway logged no request for this test"
    refused = [a for a in answers if a[2] >= 400]
    assert refused == [], f"the gateway refused some of the client's requests: {refused} (all: {answers})"
    assert rig.trap.seen == [], f"a client tried to reach outside the machine: {rig.trap.seen}"


# --- Codex CLI ----------------------------------------------------------------------------------


def codex_home(root: Path, gw: Gateway) -> Path:
    """CODEX_HOME with the gateway as a custom Responses provider and everything else off."""
    home = root / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f"""model = "{MODEL}"
model_provider = "decopy"
approval_policy = "never"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.decopy]
name = "decopy gateway"
base_url = "{gw.v1}"
wire_api = "responses"
env_key = "DECOPY_API_KEY"
request_max_retries = 0
stream_max_retries = 0
"""
    )
    return home


def test_codex_exec_prints_the_answer(rig: Rig, agent_clients: Path) -> None:
    answer = f"Codex reached the gateway {rig.tag}."
    result = rig.codex(f"Say hello. {directive(reply=[answer])}")
    assert result.returncode == 0, described(result)
    assert result.stdout.strip() == answer, described(result)
    assert len(rig.prompts()) == 1
    done_offline(rig)


def test_codex_exec_runs_one_shell_command(rig: Rig, agent_clients: Path) -> None:
    marker = f"{rig.tag}-shell-ran"
    answer = f"The command printed its marker {rig.tag}."
    loop = tool_loop("exec_command", {"cmd": f"echo {marker}"}, answer)
    result = rig.codex(f"Run `echo {marker}` and tell me what it printed. {loop}")
    assert result.returncode == 0, described(result)
    assert result.stdout.strip() == answer, described(result)
    prompts = rig.prompts()
    assert len(prompts) == 2, f"expected the call turn and the answer turn, got {len(prompts)}"
    # The second turn carries the command's output on a line of its own: Codex ran it and sent
    # the result back (the command line itself also contains the marker, after "echo ").
    assert marker not in prompts[0].replace(f"echo {marker}", "")
    assert marker in prompts[1].replace(f"echo {marker}", "")
    done_offline(rig)


# --- Claude Code --------------------------------------------------------------------------------


def test_claude_print_mode_prints_the_answer(rig: Rig, agent_clients: Path) -> None:
    answer = f"Claude Code reached the gateway {rig.tag}."
    result = rig.claude(f"Say hello. {directive(reply=[answer])}")
    assert result.returncode == 0, described(result)
    assert result.stdout.strip() == answer, described(result)
    assert len(rig.prompts()) == 1
    done_offline(rig)


def test_claude_print_mode_reads_a_file_with_a_tool(rig: Rig, agent_clients: Path) -> None:
    secret = f"pelican-{rig.tag}"
    note = rig.workdir() / "note.txt"
    note.write_text(f"secret word: {secret}\n")
    answer = f"The file's secret word was read {rig.tag}."
    loop = tool_loop("Read", {"file_path": str(note)}, answer)
    result = rig.claude(f"What is the secret word in note.txt? {loop}")
    assert result.returncode == 0, described(result)
    assert result.stdout.strip() == answer, described(result)
    prompts = rig.prompts()
    assert len(prompts) == 2, f"expected the call turn and the answer turn, got {len(prompts)}"
    # The secret is only in the file: the second turn carries it, so Claude Code ran Read and
    # sent its result back through the gateway.
    assert secret not in prompts[0] and secret in prompts[1]
    done_offline(rig)


# --- OpenAI Agents SDK (Python) -----------------------------------------------------------------


def test_openai_agents_runner_answers(rig: Rig) -> None:
    answer = f"The agent answers {rig.tag}."
    out = rig.agents_sdk("plain", f"Say hello. {directive(reply=[answer])}")
    assert out["final_output"] == answer
    assert out["items"] == ["message_output_item"]
    done_offline(rig)


def test_openai_agents_runner_calls_a_function_tool(rig: Rig) -> None:
    answer = f"It is sunny in Paris {rig.tag}."
    out = rig.agents_sdk("tool", f"What is the weather in Paris? {tool_loop('get_weather', {'city': 'Paris'}, answer)}")
    assert out["executed"] == ["Paris"]
    assert out["final_output"] == answer
    assert out["items"] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    prompts = rig.prompts()
    assert len(prompts) == 2 and "sunny in Paris" in prompts[1]
    done_offline(rig)


# --- Vercel AI SDK and the openai npm package ---------------------------------------------------


def test_ai_sdk_generate_text(rig: Rig, agent_clients: Path) -> None:
    out = rig.node("ai_sdk.mjs", "generate", f"Say hello. {directive(reply=['Gener', 'ated ', f'{rig.tag}.'])}")
    assert out["text"] == f"Generated {rig.tag}." and out["finishReason"] == "stop"
    assert out["usage"]["outputTokens"] > 0 and out["usage"]["inputTokens"] > 0
    done_offline(rig)


def test_ai_sdk_stream_text(rig: Rig, agent_clients: Path) -> None:
    pieces = ["Streamed ", "in ", "pieces ", f"{rig.tag}."]
    out = rig.node("ai_sdk.mjs", "stream", f"Say hello. {directive(reply=pieces, interval_ms=20)}")
    assert "streamError" not in out, out
    assert out["text"] == "".join(pieces) and out["finishReason"] == "stop"
    assert "".join(out["deltas"]) == out["text"] and len(out["deltas"]) > 1  # it streamed, not one block
    done_offline(rig)


def test_ai_sdk_generate_text_with_a_tool_over_several_steps(rig: Rig, agent_clients: Path) -> None:
    answer = f"Paris is sunny {rig.tag}."
    out = rig.node("ai_sdk.mjs", "tools", f"Weather in Paris? {tool_loop('get_weather', {'city': 'Paris'}, answer)}")
    assert out["executed"] == ["Paris"]
    first, second = out["steps"]
    assert first["finishReason"] == "tool-calls"
    assert [(c["toolName"], c["input"]) for c in first["toolCalls"]] == [("get_weather", {"city": "Paris"})]
    assert first["toolCalls"][0]["toolCallId"]
    assert second["finishReason"] == "stop" and second["text"] == answer
    assert out["text"] == answer
    prompts = rig.prompts()
    assert len(prompts) == 2 and "sunny in Paris" in prompts[1]
    done_offline(rig)


def test_openai_npm_responses_create_streamed(rig: Rig, agent_clients: Path) -> None:
    pieces = ["Node ", "responses ", f"{rig.tag}."]
    out = rig.node("openai_responses.mjs", f"Say hello. {directive(reply=pieces)}")
    assert out["text"] == "".join(pieces)
    events = out["events"]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events and "response.output_text.done" in events
    seq = out["sequence"]
    assert all(isinstance(n, int) for n in seq) and seq == sorted(seq) and len(set(seq)) == len(seq)
    assert out["final"]["status"] == "completed" and out["final"]["id"].startswith("resp_")
    assert out["final"]["usage"]["output_tokens"] > 0
    done_offline(rig)
