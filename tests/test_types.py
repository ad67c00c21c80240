"""The code is typed and the types are checked: mypy --strict over the project's packages and its tests."""

from __future__ import annotations

import subprocess
import sys

from devtools.procs import ROOT


def test_mypy_strict_passes() -> None:
    # Configuration (files, strict) is [tool.mypy] in pyproject.toml.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
