"""The fences hold: every private part of a library the gateway relies on is still there, unchanged.

Each fence module (``shared.fence.FENCES``) lists its uses in ``PRIVATE_USES``. An upgrade that
removes one, or changes the parameters of a method the gateway overrides or calls, fails here
with the library, its installed version and the attribute, before it can fail in production.
A private part used outside its library's fence fails here too.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.procs import ROOT
from shared.fence import FENCES, PrivateUse
from tests.unit.conftest import arun


def _uses() -> list[PrivateUse]:
    seen: list[PrivateUse] = []
    for module in sorted(set(FENCES.values())):
        seen.extend(importlib.import_module(module).PRIVATE_USES)
    return seen


USES = _uses()


def _instance(cls: type[Any]) -> Any:
    """An instance of ``cls`` as the gateway makes one (instance attributes are set in __init__)."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name == "redis.asyncio.connection.AbstractConnection":
        from redis.asyncio.connection import Connection

        return Connection()
    if name == "arq.worker.Worker":
        from arq.worker import Worker, func

        async def noop(ctx: dict[str, Any]) -> None:
            return None

        async def make() -> Any:
            return Worker(functions=[func(noop, name="noop")])

        return arun(make())
    if name == "sse_starlette.sse.EventSourceResponse":
        from sse_starlette import EventSourceResponse

        async def body() -> Any:
            yield b""

        return EventSourceResponse(body())
    if name == "uvicorn.server.Server":
        import uvicorn

        return uvicorn.Server(uvicorn.Config(app=lambda *a: None))
    if name == "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol":
        import uvicorn
        from uvicorn.server import ServerState

        async def app(scope: Any, receive: Any, send: Any) -> None:
            return None

        async def make_protocol() -> Any:
            return cls(config=uvicorn.Config(app=app), server_state=ServerState(), app_state={})

        return arun(make_protocol())
    if name == "aiohttp.client.ClientSession":
        import aiohttp

        wanted = [u.target.rsplit(".", 1)[1] for u in USES if u.target.startswith("aiohttp.client:ClientSession()")]

        async def make_session() -> dict[str, Any]:
            session = aiohttp.ClientSession()
            try:
                return {attribute: getattr(session, attribute) for attribute in wanted}
            finally:
                await session.close()

        return _Attrs(arun(make_session()))
    if name == "cloudscraper.CipherSuiteAdapter":
        import cloudscraper

        return cloudscraper.create_scraper().adapters["https://"]
    raise AssertionError(f"tests/unit/test_fences.py has no way to build a {name}: add one to _instance")


class _Attrs:
    """The attributes an object had (for objects that must be closed before the test goes on)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.__dict__.update(attrs)


def _resolve(use: PrivateUse) -> Any:
    module_name, _, path = use.target.partition(":")
    obj: Any = importlib.import_module(module_name)
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.endswith("()"):
            obj = _instance(getattr(obj, part[:-2]))
            continue
        if i == len(parts) - 1 and isinstance(obj, type):
            # Look where the class's own code defines it, not at an override of ours.
            for klass in obj.__mro__:
                if part in vars(klass):
                    return inspect.getattr_static(klass, part)
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("use", USES, ids=[u.target for u in USES])
def test_private_part_is_still_there(use: PrivateUse) -> None:
    version = importlib.metadata.version(use.library)
    try:
        found = _resolve(use)
    except AttributeError as exc:
        pytest.fail(f"{use.library} {version}: {use.target} is gone ({exc}); the gateway uses it: {use.reason}")
    if use.params is not None:
        func = found.__func__ if isinstance(found, (staticmethod, classmethod)) else found
        if use.target == "uvicorn.server:Server.handle_exit" and func.__module__.startswith("sse_starlette"):
            # sse-starlette replaces it at import and keeps uvicorn's own: that is the one overridden.
            from sse_starlette.sse import AppStatus

            func = AppStatus.original_handler
        if not callable(func):
            pytest.fail(f"{use.library} {version}: {use.target} is no longer a function")
        params = tuple(inspect.signature(func).parameters)
        assert params == use.params, (
            f"{use.library} {version}: {use.target} now takes {params}, the gateway's fence expects "
            f"{use.params} ({use.reason})"
        )


def test_every_fenced_library_is_declared_with_a_narrow_range() -> None:
    """pyproject.toml allows only the tested versions (``==`` or ``==x.y.*``) of each fenced library."""
    text = (Path(ROOT) / "pyproject.toml").read_text()
    for library in FENCES:
        match = re.search(rf'"{re.escape(library)}(\[[^\]]*\])?([^"]*)"', text)
        assert match is not None, f"{library} has private uses but is not a declared dependency"
        spec = match.group(2)
        assert spec.startswith("=="), f"{library}: pyproject.toml allows {spec!r}, wider than the version tested"
        pinned = importlib.metadata.version(library)
        assert re.fullmatch(spec[2:].replace(".", r"\.").replace("*", ".*"), pinned), (
            f"{library}: pyproject.toml allows {spec!r}, but {pinned} is what is installed and tested"
        )


def _first_party_sources() -> dict[str, str]:
    out = {}
    for top in ("api", "worker", "shared"):
        for path in sorted((Path(ROOT) / top).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[module] = path.read_text()
    return out


def test_private_parts_are_used_only_inside_their_fence() -> None:
    """No module outside a library's fence names one of the private attributes the fence guards."""
    sources = _first_party_sources()
    for use in USES:
        attribute = use.target.rsplit(".", 1)[-1]
        if not attribute.startswith("_") or attribute.startswith("__"):
            continue  # a public name (an override of it is recorded all the same)
        fence = FENCES[use.library]
        name = re.escape(attribute)
        anywhere = re.compile(rf"\.{name}\b|def {name}\b")  # ``x._attr``, or an override ``def _attr``
        not_own = re.compile(rf"(?<!self)\.{name}\b|def {name}\b")
        for module, text in sources.items():
            if module == fence:
                continue
            # A module whose own class sets an attribute of that name (``self._writer = ...``)
            # may use its own; any other ``self._attr`` would be the library's, through a subclass.
            pattern = not_own if re.search(rf"self\.{name}\s*[:=]", text) else anywhere
            assert not pattern.search(text), (
                f"{module} uses {use.library}'s private {attribute}: only {fence} may (see shared/fence.py)"
            )


def test_the_fences_work_on_a_live_connection(redis_url: str) -> None:
    """redis-py: the writer the hub and the publisher drive is the open socket's StreamWriter."""
    from redis.asyncio import Redis

    from shared.redis_fence import stream_writer

    async def body() -> None:
        client = Redis.from_url(redis_url)
        conn = client.connection_pool.make_connection()
        await conn.connect()
        writer = stream_writer(conn)
        assert isinstance(writer, asyncio.StreamWriter), (
            f"redis {importlib.metadata.version('redis')}: Connection._writer is {type(writer).__name__}, "
            "not the socket's StreamWriter"
        )
        await conn.disconnect()
        assert stream_writer(conn) is None
        await client.aclose()

    arun(body())


def test_arq_still_logs_job_arguments_through_args_to_string() -> None:
    """arq: run_job renders arguments with the module-level args_to_string the fence replaces."""
    import arq.worker

    from worker.jobs.arq_fence import hide_job_arguments

    source = inspect.getsource(arq.worker.Worker.run_job)
    assert "args_to_string(" in source, (
        f"arq {importlib.metadata.version('arq')}: Worker.run_job no longer calls args_to_string; "
        "worker.jobs.arq_fence.hide_job_arguments has nothing left to replace"
    )
    hide_job_arguments()

    class Loud:
        def __repr__(self) -> str:
            raise AssertionError("the job's arguments were rendered")

    assert arq.worker.args_to_string((Loud(),), {}) == "…"  # type: ignore[attr-defined]


def test_aiohttp_silent_retry_is_read_where_the_fence_turns_it_off() -> None:
    """aiohttp: the request path still reads ``_retry_connection`` (else turning it off does nothing)."""
    import aiohttp.client

    source = inspect.getsource(aiohttp.client.ClientSession._request)
    assert "self._retry_connection" in source, (
        f"aiohttp {importlib.metadata.version('aiohttp')}: ClientSession._request no longer reads "
        "_retry_connection; worker.upstream.decopy.fence.no_silent_retry does nothing"
    )


def test_cloudscraper_recognises_a_challenge_aiohttp_read() -> None:
    """cloudscraper: its own test still tells a v1 challenge page from an ordinary error."""
    import cloudscraper

    from worker.upstream.decopy.fence import is_solvable_challenge
    from worker.upstream.decopy.transport import Answer

    session = cloudscraper.create_scraper()
    # The v1 "I'm Under Attack" page as cloudscraper's own check describes it.
    page = (
        b'<html><head><title>Just a moment...</title></head><body><script src="/cdn-cgi/images/trace/jsch/js/x.js">'
        b'</script><form class="challenge-form" id="challenge-form" '
        b'action="/?__cf_chl_f_tk=abc" method="POST"></form></body></html>'
    )
    challenge = Answer.of(503, {"Server": "cloudflare", "Content-Type": "text/html"}, page)
    plain = Answer.of(503, {"Server": "nginx", "Content-Type": "text/html"}, b"<html>busy</html>")
    check: Callable[[Answer], bool] = lambda a: is_solvable_challenge(  # noqa: E731
        session, a.as_requests_response("https://decopy.ai/")
    )
    version = importlib.metadata.version("cloudscraper")
    assert check(challenge), f"cloudscraper {version}: Cloudflare.is_Challenge_Request no longer sees a v1 page"
    assert not check(plain), f"cloudscraper {version}: Cloudflare.is_Challenge_Request sees a challenge in any 503"
    session.close()


def test_uvicorn_cycle_still_says_whether_a_response_began() -> None:
    """uvicorn: GuardedProtocol sends its 408 only when the request's cycle began no response."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    source = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in ("response_started", "response_complete"):
        assert f"self.{attribute} = " in source, (
            f"uvicorn {importlib.metadata.version('uvicorn')}: RequestResponseCycle no longer sets {attribute}; "
            "api.http.shutdown.GuardedProtocol reads it before writing a 408"
        )
