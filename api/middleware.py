"""Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would hide ``http.disconnect``)."""

from __future__ import annotations

import hmac
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openai_format import error_response
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


class AuthMiddleware:
    """Guards ``/v1/*`` (any valid key) and ``/admin/*`` (the master key only).

    With ``API_MASTER_KEY`` unset, ``/v1/*`` is open and ``/admin/*`` is refused (403): there is
    no admin without a master key.
    """

    def __init__(self, app: ASGIApp, *, master_key: str | None) -> None:
        self.app = app
        self._master = master_key.encode() if master_key else None

    def _is_master(self, token: str) -> bool:
        return self._master is not None and hmac.compare_digest(token.encode(), self._master)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        try:
            if path.startswith("/admin/") or path == "/admin":
                if self._master is None:
                    raise PermissionDenied("The admin API is disabled: set API_MASTER_KEY to enable it.",
                                           code="admin_disabled")
                if not self._is_master(bearer_token(scope)):
                    raise AuthenticationFailed("The admin API needs the master key.")
                scope.setdefault("state", {})["key_name"] = "master"  # for the access log
            elif path.startswith("/v1/") and self._master is not None:
                if not self._is_master(bearer_token(scope)):
                    raise AuthenticationFailed("Incorrect API key provided.")
                scope.setdefault("state", {})["key_name"] = "master"
        except GatewayError as err:
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)
