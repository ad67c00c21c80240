"""Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would hide ``http.disconnect``)."""

from __future__ import annotations

import hmac
import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openai_format import error_response
from shared.errors import AuthenticationFailed

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
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class AuthMiddleware:
    """When ``API_MASTER_KEY`` is set, every ``/v1/*`` request needs ``Authorization: Bearer <key>``."""

    def __init__(self, app: ASGIApp, *, master_key: str | None) -> None:
        self.app = app
        self._master = master_key.encode() if master_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._master is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            err = AuthenticationFailed(
                "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        elif scheme.lower() != "bearer" or not token.strip():
            err = AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
        elif not hmac.compare_digest(token.strip().encode(), self._master):
            err = AuthenticationFailed("Incorrect API key provided.")
        else:
            await self.app(scope, receive, send)
            return
        await error_response(err)(scope, receive, send)
