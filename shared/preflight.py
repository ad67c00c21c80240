"""Say which Python to use when the gateway's dependencies are missing, instead of a traceback.

Why: a newcomer who types ``python -m worker doctor`` with the system's Python got
``ModuleNotFoundError: No module named 'uvloop'``. The entry points call
:func:`require_dependencies` before importing anything else; it only looks the modules up
(``importlib.util.find_spec``, nothing is imported), so it costs a few milliseconds. Standard
library only, by necessity.
"""

from __future__ import annotations

import importlib.util
import sys

#: The top-level modules of the dependencies in pyproject.toml (uvloop and httptools come with
#: ``uvicorn[standard]``); tests/test_operator_commands.py checks the list against pyproject.toml.
MODULES = (
    "aiohttp",
    "aiohttp_socks",
    "arq",
    "cloudscraper",
    "curl_cffi",
    "hiredis",
    "httptools",
    "httpx",
    "jsonschema",
    "orjson",
    "prometheus_client",
    "pydantic",
    "redis",
    "requests",
    "socks",
    "sse_starlette",
    "starlette",
    "urllib3",
    "uvicorn",
    "uvloop",
)

EXIT_MISSING = 2


def missing_modules() -> list[str]:
    """The dependencies this Python cannot import."""
    return [name for name in MODULES if importlib.util.find_spec(name) is None]


def require_dependencies(module: str) -> None:
    """Exit 2 with what to run instead when this Python lacks the dependencies (``module``: ``api``, ``worker``)."""
    missing = missing_modules()
    if not missing:
        return
    args = " ".join(sys.argv[1:])
    print(
        f"python -m {module}: this Python ({sys.executable}) lacks the gateway's dependencies "
        f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}).\n"
        f"In a checkout, run `make install` once, then `.venv/bin/python -m {module}{' ' + args if args else ''}`,\n"
        "or the make targets (`make doctor`, `make keys`, `make usage`), which use .venv themselves.",
        file=sys.stderr,
    )
    sys.exit(EXIT_MISSING)
