"""Drive Debian's headless chromium from the tests, through ``tests/browser/bridge.mjs`` (playwright-core).

Why this shape: the test logic stays in Python, next to the gateway fixtures and the openai SDK
(send requests, then look at the page), while Node runs only what it must: playwright-core, the
npm package that drives an installed browser and downloads none. One browser per test session,
a fresh context (cookies, storage) per test.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class BrowserError(AssertionError):
    """A browser action failed (an element never appeared, a wait timed out...)."""


def missing_tools() -> str | None:
    """What is missing to run the browser tests, with the one-line fix; None when all is there."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: run `make chromium` (Debian: apt-get install chromium)"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found: run `make chromium` (Debian: apt-get install nodejs npm)"
    return None


def npm_ci() -> None:
    """``npm ci`` from the committed lock file, skipped when node_modules already matches it."""
    lock = BROWSER_DIR / "package-lock.json"
    installed = BROWSER_DIR / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=BROWSER_DIR,
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )


class Browser:
    """One chromium, controlled by JSON lines; every call returns the bridge's value or raises."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            ["node", "bridge.mjs"],
            cwd=BROWSER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next(60)
        if not ready.get("ready"):
            raise BrowserError(f"the browser did not start: {ready}")
        self.version = str(ready.get("version"))

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"no answer from the browser within {timeout}s") from None
        if line is None:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise BrowserError(f"the browser bridge exited ({self._proc.poll()}): {err[-2000:]}")
        return dict(json.loads(line))

    def __call__(self, op: str, *, timeout: float = 60, **args: Any) -> Any:
        call_id = next(self._ids)
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"id": call_id, "op": op, **args}) + "\n")
        self._proc.stdin.flush()
        answer = self._next(timeout)
        if answer.get("id") != call_id:
            raise BrowserError(f"answer out of order: {answer}")
        if not answer.get("ok"):
            raise BrowserError(f"{op} {args}: {answer.get('error')}")
        return answer.get("value")

    # Shorthands used by the tests.
    def new_page(self, width: int = 1280, height: int = 900) -> None:
        self("new_page", width=width, height=height)

    def goto(self, url: str) -> int | None:
        status = self("goto", url=url)
        return None if status is None else int(status)

    def text(self, sel: str) -> str:
        return str(self("text", sel=sel))

    def wait_text(self, sel: str, pattern: str, timeout: float = 20) -> str:
        """Wait until the element's text matches the regular expression ``pattern``; return the text."""
        return str(self("wait_text", sel=sel, pattern=pattern, timeout_ms=int(timeout * 1000), timeout=timeout + 10))

    def wait_js(self, expr: str, timeout: float = 20) -> Any:
        """Wait until the JavaScript expression is truthy; return its value."""
        return self("wait_js", expr=expr, timeout_ms=int(timeout * 1000), timeout=timeout + 10)

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self("screenshot", path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
