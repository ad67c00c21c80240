"""The connection settings of the ``make run`` / ``make demo`` running from this checkout.

Why this exists: the operator commands (``python -m api keys|usage``, ``python -m worker doctor``
and the make targets that run them) must talk to the gateway a developer just started, whose
Redis is a private one on a random port and whose upstream, in the demo, is the simulator: not
to whatever answers on 127.0.0.1:6379, nor to the real decopy.ai. ``devtools.run`` writes those
settings to ``.run/gateway.json`` (git-ignored, readable by its owner only) while it runs and
removes the file when it stops. The commands use it only when ``REDIS_URL`` is not set in their
own environment, and they always say which Redis and which upstream they talk to and why.

A deployed gateway never sees the file: the package is installed there, not run from a checkout.
Only the standard library is used here, so a command can explain itself even when the rest of
the gateway's dependencies are missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The checkout's git-ignored folder for what ``make run`` keeps: this file, the generated master
#: key, the logs.
RUN_DIR = Path(__file__).resolve().parent.parent / ".run"
STATE_FILE = RUN_DIR / "gateway.json"
#: The generated master key, kept from one ``make run`` to the next.
MASTER_KEY_FILE = RUN_DIR / "master-key"
#: The settings ``make run`` chooses for its processes (everything else comes from the shell).
SETTINGS = ("REDIS_URL", "DECOPY_BASE_URL", "API_MASTER_KEY")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def redact(url: str) -> str:
    """A URL without its password (a Redis URL may carry one)."""
    return re.sub(r"://([^/@:]*):[^/@]*@", r"://\1:***@", url)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, but not ours to judge; the cmdline check decides
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a recycled pid must not pass for the gateway
        try:
            return b"devtools.run" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def write(state: Mapping[str, Any]) -> None:
    """Write the running gateway's settings (``devtools.run``); the file is readable by its owner only."""
    RUN_DIR.mkdir(exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(state), out, indent=2)
        out.write("\n")
    os.replace(tmp, STATE_FILE)


def remove(pid: int) -> None:
    """Remove the file if the gateway of ``pid`` wrote it (a second ``make run`` may own it now)."""
    state = _load()
    if state is not None and state.get("pid") == pid:
        STATE_FILE.unlink(missing_ok=True)


def _load() -> dict[str, Any] | None:
    try:
        value = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def running() -> dict[str, Any] | None:
    """The settings of the ``make run``/``make demo`` running from this checkout, or None."""
    state = _load()
    if state is None or not isinstance(state.get("pid"), int) or not _alive(state["pid"]):
        return None
    return state


def environment(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], str]:
    """The environment an operator command builds its settings from, and where it came from.

    ``REDIS_URL`` set: the environment as it is. Otherwise, with a ``make run`` running from this
    checkout, its settings fill in what the environment does not set.
    """
    env = dict(os.environ if environ is None else environ)
    if "REDIS_URL" in env:
        return env, "from the environment (REDIS_URL is set)"
    state = running()
    if state is None:
        stale = " (.run/gateway.json is left from one that stopped)" if STATE_FILE.exists() else ""
        return env, f"the defaults: no `make run` or `make demo` is running from this checkout{stale}"
    chosen = state.get("settings", {})
    merged = {**{k: str(v) for k, v in chosen.items() if k in SETTINGS}, **env}
    made_by = f"the `make {state.get('mode', 'run')}` running as pid {state['pid']}"
    return merged, f"from {_shown(STATE_FILE)}, written by {made_by}"


def describe(redis_url: str, upstream: str, origin: str) -> str:
    """The line every operator command prints first: which Redis, which upstream, and why."""
    return f"Redis {redact(redis_url)} · upstream {redact(upstream)} · settings {origin}"
