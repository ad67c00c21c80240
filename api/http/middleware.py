"""Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would hide ``http.disconnect``)."""

from __future__ import annotations

import hmac
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dashboard import sessions as dashboard_sessions
from api.http.login_throttle import LoginThrottle
from api.http.responses import error_response
from api.tenancy.keys import MASTER, OPEN, KeyStore, Principal
from shared.errors import AuthenticationFailed, GatewayError, PermissionDenied

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """Gives every request an id (the client's ``x-request-id`` if sane) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _SAFE_ID.match(given) else "req_" + uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["received"] = time.monotonic()  # for openai-processing-ms

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def bearer_token(scope: Scope) -> str:
    """The key in ``Authorization: Bearer <key>``; raises 401 when missing or malformed."""
    header = Headers(scope=scope).get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
    return token.strip()


def client_key(scope: Scope) -> str:
    """The key of a ``/v1/*`` call: ``Authorization: Bearer <key>`` (OpenAI's SDKs) or, without that
    header (or with it blank), ``x-api-key: <key>`` (Anthropic's clients); raises 401 when missing."""
    headers = Headers(scope=scope)
    if not headers.get("authorization", "").strip():  # absent or blank: Anthropic's header, if any
        key = headers.get("x-api-key", "").strip()
        if key:
            return key
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            code="missing_api_key",
        )
    return bearer_token(scope)


def _dashboard_call(scope: Scope) -> bool:
    """A call the dashboard page makes: its session cookie and no Authorization header."""
    return "authorization" not in Headers(scope=scope) and dashboard_sessions.session_id(scope) is not None


class AuthMiddleware:
    """Guards ``/v1/*`` (the master key or a team key, as a Bearer token or in ``x-api-key``) and
    ``/admin/*`` (the master key only, as a Bearer token).

    Puts the caller's :class:`api.tenancy.keys.Principal` into ``scope["state"]["principal"]``. A team key
    is looked up in Redis on every request (no cache), so a revoked key fails on every replica
    from the next request on; Redis down makes that lookup a 503, never a 500.

    With ``API_MASTER_KEY`` unset, ``/v1/*`` is open to anyone, unlimited (``python -m api``
    allows that only on a loopback address or with ``API_ALLOW_OPEN``), except to web pages of
    other origins than ``CORS_ALLOW_ORIGINS`` lists (a CSRF guard, 403), and ``/admin/*`` is
    refused (403): there is no admin without a master key.

    ``/admin/*`` and ``/dashboard/api/*`` also accept the dashboard's session cookie
    in place of the master key, when no ``Authorization`` header is sent; see
    ``api/dashboard/sessions.py`` for the session and its CSRF checks.
    """

    def __init__(self, app: ASGIApp, *, master_key: str | None, allow_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self._master = master_key.encode() if master_key else None
        self._origins = frozenset(allow_origins)

    def _is_master(self, token: str) -> bool:
        return self._master is not None and hmac.compare_digest(token.encode(), self._master)

    async def _principal(self, scope: Scope, path: str) -> Principal | None:
        if path.startswith("/admin/") or path == "/admin" or path.startswith("/dashboard/api/"):
            if self._master is None:
                raise PermissionDenied(
                    "The admin API is disabled: set API_MASTER_KEY to enable it.", code="admin_disabled"
                )
            if _dashboard_call(scope):  # a logged-in dashboard stands for the master key
                await dashboard_sessions.require_admin_cookie(scope)
                return MASTER
            token = bearer_token(scope)
            throttle: LoginThrottle = scope["app"].state.login_throttle
            await throttle.check(scope)  # guesses are refused while too many failed, right or wrong
            if not self._is_master(token):
                await throttle.failed(scope)
                raise AuthenticationFailed("The admin API needs the master key.")
            await throttle.succeeded(scope)
            return MASTER
        if not path.startswith("/v1/"):
            return None
        if self._master is None:
            if not self._origin_allowed(scope):
                raise PermissionDenied(
                    "Without API_MASTER_KEY the gateway refuses requests from web pages of other origins "
                    "(add the page's origin to CORS_ALLOW_ORIGINS to allow it).",
                    code="cross_origin_refused",
                )
            return OPEN
        token = client_key(scope)
        if self._is_master(token):
            return MASTER
        keys: KeyStore = scope["app"].state.keys
        record = await keys.authenticate(token)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return Principal("key", record)

    def _origin_allowed(self, scope: Scope) -> bool:
        """Open mode's CSRF guard: a browser names the page that sent a request in ``Origin``; a page
        of another origin (not listed in CORS_ALLOW_ORIGINS) must not spend a gateway that asks no
        key, even with a "simple" request (a text/plain POST) that needs no CORS preflight.
        Clients that are not browsers send no ``Origin`` and pass."""
        origin = Headers(scope=scope).get("origin")
        if origin is None or "*" in self._origins or origin.rstrip("/") in self._origins:
            return True
        return origin != "null" and dashboard_sessions.same_origin(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        try:
            principal = await self._principal(scope, path)
        except GatewayError as err:
            await error_response(err, scope)(scope, receive, send)
            return
        if principal is not None:
            state = scope.setdefault("state", {})
            state["principal"] = principal
            # The access log names the caller: a team key's name, never its secret.
            state["key_name"] = principal.key.name if principal.key is not None else principal.kind
        await self.app(scope, receive, send)
