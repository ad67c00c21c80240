"""The operator commands say where they point, find the gateway `make run` started, and explain
a missing environment instead of a traceback (shared/local_run.py, shared/preflight.py).

The make targets themselves, against a real ``make demo``, are run by tests/test_newcomer.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import local_run, preflight
from tests.conftest import Gateway, wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_preflight_knows_every_dependency() -> None:
    modules = importlib.metadata.packages_distributions()
    by_dist: dict[str, set[str]] = {}
    for module, dists in modules.items():
        for dist in dists:
            by_dist.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    for req in importlib.metadata.requires("decopy-gateway") or []:
        if "extra ==" in req:
            continue
        dist = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")
        assert by_dist.get(dist, set()) & set(preflight.MODULES), f"{dist}: none of its modules in preflight.MODULES"
    assert preflight.missing_modules() == []


@pytest.mark.parametrize("argv", [["worker", "doctor"], ["api", "keys", "list"]])
def test_a_python_without_the_dependencies_gets_a_sentence(argv: list[str]) -> None:
    # -S: no site-packages, as with a system Python that never saw `make install`.
    done = subprocess.run(
        [sys.executable, "-S", "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == preflight.EXIT_MISSING, done
    assert "Traceback" not in done.stderr
    assert f".venv/bin/python -m {' '.join(argv)}" in done.stderr and "make install" in done.stderr


@pytest.fixture
def state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "gateway.json"
    monkeypatch.setattr(local_run, "STATE_FILE", path)
    return path


@pytest.fixture
def fake_run() -> Iterator[int]:
    """A live process whose command line names devtools.run, as `make run`'s does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "devtools.run"])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    wait_until(lambda: b"devtools.run" in cmdline.read_bytes(), 10, "the child's exec")  # not the fork's copy of ours
    yield proc.pid
    proc.kill()
    proc.wait(10)


def test_settings_of_a_running_make_run_fill_in_what_the_environment_lacks(state_file: Path, fake_run: int) -> None:
    settings = {
        "REDIS_URL": "redis://:pw@127.0.0.1:1/0",
        "DECOPY_BASE_URL": "http://127.0.0.1:2",
        "API_MASTER_KEY": "k",
    }
    local_run.write({"pid": fake_run, "mode": "demo", "settings": settings})
    assert state_file.stat().st_mode & 0o777 == 0o600  # it holds the master key
    env, origin = local_run.environment({"LOG_LEVEL": "DEBUG", "DECOPY_BASE_URL": "http://mine"})
    assert env == {**settings, "LOG_LEVEL": "DEBUG", "DECOPY_BASE_URL": "http://mine"}  # the shell's own win
    assert f"make demo` running as pid {fake_run}" in origin
    line = local_run.describe(env["REDIS_URL"], env["DECOPY_BASE_URL"], origin)
    assert "redis://:***@127.0.0.1:1/0" in line and "pw" not in line and "http://mine" in line
    # REDIS_URL in the environment: the file is not read at all.
    env, origin = local_run.environment({"REDIS_URL": "redis://elsewhere:6379/0"})
    assert env == {"REDIS_URL": "redis://elsewhere:6379/0"} and "REDIS_URL is set" in origin
    # Removed only by the run that wrote it.
    local_run.remove(fake_run + 1)
    assert state_file.exists()
    local_run.remove(fake_run)
    assert not state_file.exists()


def test_a_file_left_by_a_stopped_run_is_ignored(state_file: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    state_file.write_text(json.dumps({"pid": int(done.stdout), "mode": "run", "settings": {"REDIS_URL": "redis://x"}}))
    env, origin = local_run.environment({})
    assert env == {} and "no `make run` or `make demo` is running" in origin and "left from one that stopped" in origin
    # a pid that lives but is not a make run (a recycled pid) is not one either
    state_file.write_text(json.dumps({"pid": os.getpid(), "settings": {"REDIS_URL": "redis://x"}}))
    assert local_run.running() is None


def test_cli_names_its_redis_and_upstream(gateway: Gateway) -> None:
    env = {**os.environ, "REDIS_URL": gateway.redis_url, "DECOPY_BASE_URL": gateway.sim_url}
    done = subprocess.run(
        [sys.executable, "-m", "api", "keys", "list", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["object"] == "list"  # stdout stays JSON; the note goes to stderr
    first = done.stderr.splitlines()[0]
    assert (
        first
        == f"Redis {gateway.redis_url} · upstream {gateway.sim_url} · settings from the environment (REDIS_URL is set)"
    )
