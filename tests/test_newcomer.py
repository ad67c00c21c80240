"""A newcomer's first ten minutes, as a test: the README followed to the letter on a fresh clone.

The repository is cloned (its committed HEAD) into a temporary folder and ``make demo`` runs
there from a shell environment with none of the gateway's settings, as the README says. Then,
against what the banner printed: the README's Python example runs with the openai SDK; every
row of the README's "What happens when…" table whose demo column is a directive alone is
provoked and must end with one of that row's codes; every operator command of the README's
operator block runs exactly as written (each must say which Redis and upstream it talks to: the
demo's); the dashboard is logged into in a real browser with the key the banner showed, and its
"Try it" box answers. Ctrl-C must stop it all, keep the logs and the key, and the next
``make demo`` must reuse the key.

To stay fast, the clone uses this checkout's installed environment (``VENV=…``, a variable of the
Makefile) instead of installing its own: only after checking that the clone's ``pyproject.toml``
and ``constraints.txt`` are the very files that environment was installed from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from devtools.procs import free_port
from tests.browser_driver import Browser, missing_tools, npm_ci
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
VENV = ROOT / ".venv"
#: The settings a newcomer's shell does not have (and make's own, from `make test` around us).
SCRUBBED = re.compile(r"^(REDIS_URL|API_.*|DECOPY_.*|UPSTREAM_.*|WORKER_.*|MAKE.*|MFLAGS|VIRTUAL_ENV)$")

pytestmark = pytest.mark.slow


def readme_block(heading: str, lang: str) -> str:
    """The first ```lang block after the README's ``heading``."""
    section = README.split(f"\n{heading}\n", 1)[1]
    match = re.search(rf"^```{lang}\n(.*?)^```", section, re.S | re.M)
    assert match, f"no {lang} block under {heading}"
    return match.group(1)


@dataclass
class Demo:
    """``make demo`` running in the clone, its output read as it comes."""

    clone: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, clone: Path, env: dict[str, str]) -> Demo:
        proc = subprocess.Popen(
            ["make", "demo"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: Ctrl-C reaches make and what it runs
        )
        demo = cls(clone, env, proc)
        demo.reader = threading.Thread(target=demo._read, daemon=True)
        demo.reader.start()
        wait_until(lambda: "Ctrl-C stops everything." in demo.output or proc.poll() is not None, 90, "the banner")
        assert proc.poll() is None, demo.output
        return demo

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def banner(self, name: str) -> str:
        match = re.search(rf"^  {name} +(\S+)", self.output, re.M)
        assert match, f"no {name!r} in the banner:\n{self.output}"
        return match.group(1)

    def ctrl_c(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(60)
        self._close()
        return code

    def _close(self) -> None:
        if self.reader is not None:
            self.reader.join(10)  # the output to its end (the goodbye line included)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        try:
            self.ctrl_c()
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self._close()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the newcomer test clones the repository: it needs git and a git checkout")
    dest = tmp_path_factory.mktemp("newcomer") / "decopy-gateway"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=60)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    cloned = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True, check=True)
    assert cloned.stdout == head.stdout, "the clone is not this checkout's HEAD"
    # Reuse this checkout's environment, installed from these very files (else make would install).
    stamp = VENV / ".installed"
    assert stamp.exists(), "run `make install` first"
    for name in ("pyproject.toml", "constraints.txt"):
        assert (dest / name).read_bytes() == (ROOT / name).read_bytes(), f"{name} changed since the last commit"
        assert (ROOT / name).stat().st_mtime <= stamp.stat().st_mtime, "run `make install` first"
        os.utime(dest / name, (stamp.stat().st_mtime - 1, stamp.stat().st_mtime - 1))
    return dest


@pytest.fixture(scope="module")
def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not SCRUBBED.match(k)}
    env.update(VENV=str(VENV), API_PORT=str(free_port()))  # 8088 may be taken on a shared machine
    return env


@pytest.fixture(scope="module")
def demo(clone: Path, shell_env: dict[str, str]) -> Iterator[Demo]:
    running = Demo.start(clone, shell_env)
    yield running
    running.stop()


def test_banner_names_the_dashboard_and_a_kept_key(demo: Demo) -> None:
    base = demo.banner("API").removesuffix("/v1")
    assert demo.banner("dashboard") == base + "/dashboard"
    key = demo.banner("master key")
    assert (demo.clone / ".run" / "master-key").read_text().strip() == key
    assert "generated, kept in .run/master-key" in demo.output
    assert "(the decopy simulator)" in demo.output
    assert httpx.get(base + "/readyz", timeout=5).status_code == 200
    # a git-ignored place: the clone stays clean
    status = subprocess.run(["git", "status", "--porcelain"], cwd=demo.clone, capture_output=True, text=True)
    assert status.stdout == ""


def test_readme_python_example_streams_reasoning(demo: Demo) -> None:
    code = readme_block("## Calling it", "python")
    assert 'base_url="http://127.0.0.1:8088/v1"' in code and '"sk-local-…"' in code
    code = code.replace("http://127.0.0.1:8088", demo.banner("API").removesuffix("/v1"))
    code = code.replace('"sk-local-…"', json.dumps(demo.banner("master key")))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # the demo's DeepSeek-R1 thinks first: the reasoning arrived apart from the answer
    assert "The user wrote" in done.stdout and "DeepSeek-R1" in done.stdout, done.stdout
    assert "<think>" not in done.stdout


def test_the_demo_answers_like_a_model(demo: Demo) -> None:
    client = openai.OpenAI(base_url=demo.banner("API"), api_key=demo.banner("master key"), max_retries=0, timeout=30)
    try:
        answers = {
            client.chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": text}])
            .choices[0]
            .message.content
            for text in ("Hello!", "What is a queue?", "Write some python code")
        }
        assert len(answers) == 3 and not any(a and a.startswith("Hello! You said") for a in answers)
        r1 = client.chat.completions.create(model="decopy-deepseek-r1", messages=[{"role": "user", "content": "Hi"}])
        message = r1.choices[0].message
        assert (message.model_extra or {}).get("reasoning_content") and "<think>" not in (message.content or "")
    finally:
        client.close()


def _directive_rows() -> list[tuple[str, dict[str, object], set[str]]]:
    """Rows of "What happens when…" whose demo column is a directive alone: (when, directive, codes)."""
    table = README.split("\n## What happens when…\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("when…", "---"):
            continue
        codes = set(re.findall(r"`([a-z_]+)`", cells[2]))
        first = re.match(r"`(\{.*?\})`", cells[3])
        if first and not re.search(r"make demo|kill|Ctrl-C", cells[3]):
            rows.append((cells[0], json.loads(first.group(1)), codes))
    return rows


def test_readme_failure_table_holds_in_the_demo(demo: Demo) -> None:
    rows = _directive_rows()
    assert len(rows) >= 3, rows  # the table and this parser agree
    key, base = demo.banner("master key"), demo.banner("API")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for when, directive, codes in rows:
            content = "Hi\n@@sim@@ " + json.dumps(directive)
            body = {"model": "decopy-deepseek-v3", "stream": True, "messages": [{"role": "user", "content": content}]}
            with http.stream("POST", "/chat/completions", json=body) as resp:
                text = resp.read().decode()
            if resp.status_code != 200:
                error = json.loads(text)["error"]
            else:
                events = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
                error = next((e["error"] for e in events if "error" in e), None)
            if codes:
                assert error is not None and error["code"] in codes, (when, directive, text[-500:])
            else:
                assert error is None and text.rstrip().endswith("data: [DONE]"), (when, directive, text[-500:])


def _operator_commands() -> list[str]:
    block = readme_block("## The dashboard and the operator commands", "sh")
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [c for c in commands if c]


def test_readme_operator_commands_work_as_written(demo: Demo) -> None:
    commands = _operator_commands()
    assert any(c.startswith("make doctor") for c in commands) and any(c.startswith("make keys") for c in commands)
    redis, upstream = demo.banner("Redis"), demo.banner("upstream")
    outputs = {}
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=demo.clone, env=demo.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        # each says first where it points: the demo's own Redis and simulator
        assert done.stderr.startswith(f"Redis {redis} · upstream {upstream} · settings from .run/gateway.json"), (
            command,
            done.stderr,
        )
        outputs[command] = done.stdout
    assert "OK: an answer streamed end to end" in outputs["make doctor"]
    created = next(out for cmd, out in outputs.items() if "create --name" in cmd)
    name = re.search(r"created key key_\w+ \(([^)]+)\)", created)
    secret = re.search(r"^\s+(sk-\S+)$", created, re.M)
    assert name and secret, created
    assert name.group(1) in outputs["make keys"] and name.group(1) in outputs["make usage"]
    # the team key works, and its request shows in today's usage
    client = openai.OpenAI(base_url=demo.banner("API"), api_key=secret.group(1), max_retries=0, timeout=30)
    try:
        client.chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    usage = subprocess.run(
        ["make", "usage", "ARGS=--json"], cwd=demo.clone, env=demo.env, capture_output=True, text=True, timeout=60
    )
    row = next(u for u in json.loads(usage.stdout)["data"] if u["name"] == name.group(1))
    assert row["today"]["requests"] == 1


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    problem = missing_tools()
    if problem:
        pytest.fail(problem)
    npm_ci()
    b = Browser()
    yield b
    b.close()


def test_dashboard_login_with_the_banners_key(demo: Demo, browser: Browser) -> None:
    dashboard = demo.banner("dashboard")
    browser.new_page()
    assert browser.goto(dashboard) == 200
    assert browser.text("label[for=key]") == "Master key"  # one line, not three
    browser.screenshot("newcomer-login")
    browser("fill", sel="#key", value=demo.banner("master key"))
    browser("click", sel="form button[type=submit]")
    browser.wait_text("#updated", "^updated")
    assert browser("url") == dashboard
    before = int(browser.wait_text("#v-total", r"^\d[\d,]*$").replace(",", ""))
    browser("fill", sel="#try-message", value="Hello from a newcomer!")
    browser("click", sel="#try-send")
    answer = browser.wait_text("#try-output", "stand-in for", timeout=30)
    assert "Hello from a newcomer" not in answer  # an answer, not an echo
    # the "Try it" request counts in the total like any other
    wait_until(lambda: int(browser.text("#v-total").replace(",", "")) > before, 30, "requests in total to rise")
    browser.screenshot("newcomer-dashboard")
    assert browser("problems") == []  # no script error and no failed load (the favicon included)


def test_ctrl_c_keeps_the_logs_and_the_key(demo: Demo) -> None:
    key, logs = demo.banner("master key"), demo.banner("logs")
    assert demo.ctrl_c() in (0, 2, -signal.SIGINT)  # make reports the interrupt in its own way
    assert f"Stopped. The logs are kept in {logs}" in demo.output
    kept = demo.clone / logs
    assert {p.name.split("-")[0] for p in kept.glob("*.log")} >= {"api", "worker", "redis", "sim"}
    assert not (demo.clone / ".run" / "gateway.json").exists()
    # with nothing running, the operator commands say so instead of reaching for another Redis
    done = subprocess.run(["make", "keys"], cwd=demo.clone, env=demo.env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "No `make run` or `make demo` is running" in done.stderr, done
    again = Demo.start(demo.clone, demo.env)
    try:
        assert again.banner("master key") == key
        assert "kept in .run/master-key since the first run" in again.output
    finally:
        again.stop()
