"""Route handlers of the dashboard: the page, login and logout, "try it", the doctor endpoints."""

from __future__ import annotations

import functools
import hmac
import html
import string
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.dashboard import doctor, sessions
from api.http.login_throttle import LoginThrottle
from api.http.responses import JSONBody
from api.http.routes import chat_completions
from shared import redis_trouble
from shared.errors import PayloadTooLarge, PermissionDenied, RateLimited, ServiceUnavailable
from shared.settings import Settings

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
_TEMPLATES = {
    name: string.Template((HERE / "templates" / f"{name}.html").read_text()) for name in ("login", "dashboard")
}
_LOGIN_MAX_BYTES = 4096
# Everything the page loads comes from the gateway itself; nothing inline, nothing from elsewhere.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it Chromium sends "Origin: null" on form posts, which the origin check refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _page(name: str, status: int = 200, *, markup: dict[str, str] | None = None, **values: str) -> HTMLResponse:
    """Render a template: ``values`` are escaped here, ``markup`` was built escaped by the caller."""
    body = _TEMPLATES[name].substitute({**{k: html.escape(v) for k, v in values.items()}, **(markup or {})})
    return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)


def _login_page(request: Request, message: str = "", status: int = 200) -> HTMLResponse:
    return _page("login", status, message=message, hidden="" if message else "hidden")


Handler = Callable[[Request], Awaitable[Response]]


def _page_503(handler: Handler) -> Handler:
    """A page whose Redis is down or full answers a 503 page saying so (never a 500)."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        err: ServiceUnavailable
        try:
            return await handler(request)
        except (RedisError, OSError) as exc:
            err = redis_trouble.unavailable(exc)
        except ServiceUnavailable as exc:
            err = exc
        page = _login_page(request, f"{err.message} Try again in a moment.", 503)
        page.headers.update(err.headers())
        return page

    return guarded


def _json_503(handler: Handler) -> Handler:
    """An admin endpoint whose Redis is down or full answers the API's 503 error (never a 500)."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except (RedisError, OSError) as exc:
            raise redis_trouble.unavailable(exc) from exc

    return guarded


async def _logged_in(request: Request) -> bool:
    return await sessions.is_valid(request.app.state.redis, sessions.session_id(request.scope))


@_page_503
async def dashboard(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.api_master_key is None:
        return _login_page(request, "The dashboard is disabled: set API_MASTER_KEY to enable it.", 403)
    if not await _logged_in(request):
        return RedirectResponse("/dashboard/login", 303)
    models = request.app.state.models
    options = "".join(f'<option value="{html.escape(m)}">{html.escape(m)}</option>' for m in models.ids())
    return _page("dashboard", refresh=f"{settings.dashboard_refresh:g}", markup={"model_options": options})


async def favicon(request: Request) -> Response:
    """The icon browsers ask for on every page (a 404 there is noise in every dashboard load)."""
    return FileResponse(
        STATIC_DIR / "favicon.ico", media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"}
    )


@_page_503
async def login_form(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.api_master_key is None:
        return _login_page(request, "The dashboard is disabled: set API_MASTER_KEY to enable it.", 403)
    if await _logged_in(request):
        return RedirectResponse("/dashboard", 303)
    return _login_page(request)


@_page_503
async def login(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.api_master_key is None:
        return _login_page(request, "The dashboard is disabled: set API_MASTER_KEY to enable it.", 403)
    if not sessions.same_origin(request.scope):
        raise PermissionDenied("Cross-origin login refused.", code="csrf_check_failed")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _LOGIN_MAX_BYTES:
            raise PayloadTooLarge("The login form is larger than it can be.")
    fields = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
    given = fields.get("key", "").strip().encode()
    throttle: LoginThrottle = request.app.state.login_throttle
    try:
        await throttle.check(request.scope)  # before the comparison: guessing faster finds nothing
    except RateLimited as exc:
        page = _login_page(request, "Too many failed logins: wait a few minutes and try again.", 429)
        page.headers.update(exc.headers())
        return page
    if not given or not hmac.compare_digest(given, settings.api_master_key.encode()):
        await throttle.failed(request.scope)
        return _login_page(request, "That is not the master key.", 401)
    await throttle.succeeded(request.scope)
    session = await sessions.create(request.app.state.redis, settings.dashboard_session_ttl)
    response = RedirectResponse("/dashboard", 303, headers={"Cache-Control": "no-store"})
    cookie = sessions.set_cookie_header(request.scope, session, settings.dashboard_session_ttl)
    response.headers.append("set-cookie", cookie)
    return response


@_page_503
async def logout(request: Request) -> Response:
    if not sessions.same_origin(request.scope):
        raise PermissionDenied("Cross-origin logout refused.", code="csrf_check_failed")
    await sessions.delete(request.app.state.redis, sessions.session_id(request.scope))
    response = RedirectResponse("/dashboard/login", 303)
    response.headers.append("set-cookie", sessions.clear_cookie_header(request.scope))
    return response


async def try_it(request: Request) -> Response:
    """The "try it" box: the very same handler as ``POST /v1/chat/completions`` (queue, worker, relay).

    Served under ``/dashboard/api/`` so the page's session cookie (not the master key, which the
    page never holds) authenticates it; ``/v1`` itself never accepts the cookie.
    """
    return await chat_completions(request)


@_json_503
async def doctor_status(request: Request) -> Response:
    return JSONBody(await doctor.status(request.app.state.redis))


@_json_503
async def doctor_run(request: Request) -> Response:
    return JSONBody(await doctor.request_run(request.app.state.redis), status_code=202)
