"""Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would hide ``http.disconnect``)."""

from __future__ import annotations

import hmac
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dashboard import sessions as dashboard_sessions
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


def _dashboard_call(scope: Scope) -> bool:
    """A call the dashboard page makes: its session cookie and no Authorization header."""
    return "authorization" not in Headers(scope=scope) and dashboard_sessions.session_id(scope) is not None


class AuthMiddleware:
    """Guards ``/v1/*`` (the master key or a team key) and ``/admin/*`` (the master key only).

    Puts the caller's :class:`api.tenancy.keys.Principal` into ``scope["state"]["principal"]``. A team key
    is looked up in Redis on every request (no cache), so a revoked key fails on every replica
    from the next request on; Redis down makes that lookup a 503, never a 500.

    With ``API_MASTER_KEY`` unset, ``/v1/*`` is open to anyone, unlimited (``python -m api``
    allows that only on a loopback address or with ``API_ALLOW_OPEN``), and ``/admin/*`` is
    refused (403): there is no admin without a master key.

    ``/admin/*`` and ``/dashboard/api/*`` also accept the dashboard's session cookie
    in place of the master key, when no ``Authorization`` header is sent; see
    ``api/dashboard/sessions.py`` for the session and its CSRF checks.
    """

    def __init__(self, app: ASGIApp, *, master_key: str | None) -> None:
        self.app = app
        self._master = master_key.encode() if master_key else None

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
            if not self._is_master(bearer_token(scope)):
                raise AuthenticationFailed("The admin API needs the master key.")
            return MASTER
        if not path.startswith("/v1/"):
            return None
        if self._master is None:
            return OPEN
        token = bearer_token(scope)
        if self._is_master(token):
            return MASTER
        keys: KeyStore = scope["app"].state.keys
        record = await keys.authenticate(token)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return Principal("key", record)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        try:
            principal = await self._principal(scope, path)
        except GatewayError as err:
            await error_response(err)(scope, receive, send)
            return
        if principal is not None:
            state = scope.setdefault("state", {})
            state["principal"] = principal
            # The access log names the caller: a team key's name, never its secret.
            state["key_name"] = principal.key.name if principal.key is not None else principal.kind
        await self.app(scope, receive, send)
