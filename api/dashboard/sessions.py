"""Dashboard logins: a random session id in an HttpOnly cookie, its hash in Redis.

The master key never leaves the login form: the cookie holds a random id (256 bits), and Redis
holds ``sha256(id) -> "admin"`` with a TTL (``DASHBOARD_SESSION_TTL``), so what Redis stores
cannot be replayed as a cookie, and logging out or letting the TTL run out ends the session on
every API replica at once.

Cross-site request forgery: the cookie is ``SameSite=Strict`` (a browser sends it on no request
another site starts), and every call authenticated by it must carry the ``X-Dashboard`` header,
which a page of another origin cannot add without a CORS preflight the gateway never grants;
state-changing calls must also come from a page of the gateway's own host when the browser says
where they come from (``Origin``).
"""

from __future__ import annotations

import hashlib
import secrets
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import Scope

from shared import names, redis_trouble
from shared.errors import AuthenticationFailed, PermissionDenied

COOKIE = "decopy_dashboard"
HEADER = "x-dashboard"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ADMIN = b"admin"


def _key(session_id: str) -> str:
    return names.dashboard_session_key(hashlib.sha256(session_id.encode()).hexdigest())


async def create(redis: Redis, ttl: float) -> str:
    """A new session; returns the id for the cookie."""
    session_id = secrets.token_urlsafe(32)
    await redis.set(_key(session_id), _ADMIN, ex=int(ttl))
    return session_id


async def is_valid(redis: Redis, session_id: str | None) -> bool:
    if not session_id or len(session_id) > 128:
        return False
    return bool(await redis.get(_key(session_id)) == _ADMIN)


async def delete(redis: Redis, session_id: str | None) -> None:
    if session_id and len(session_id) <= 128:
        await redis.delete(_key(session_id))


def session_id(scope: Scope) -> str | None:
    """The session id in the request's cookie, if any."""
    raw = Headers(scope=scope).get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def is_https(scope: Scope) -> bool:
    """Whether the client reached us over https (uvicorn applies X-Forwarded-Proto from trusted proxies)."""
    return scope.get("scheme") in ("https", "wss")


def same_origin(scope: Scope) -> bool:
    """False when the browser says the request comes from a page of another host.

    Only the host names are compared: a reverse proxy in front of the gateway often changes the
    scheme and the port on the way (TLS ends there; nginx's ``Host $host`` drops the port), and
    another port of the same host is the same site anyway, which ``SameSite`` does not separate.
    """
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is None:
        return True
    try:
        page_host, own_host = urlsplit(origin).hostname, urlsplit("//" + headers.get("host", "")).hostname
    except ValueError:  # a malformed Origin or Host
        return False
    return page_host is not None and page_host == own_host


def set_cookie_header(scope: Scope, session: str, ttl: float) -> str:
    secure = "; Secure" if is_https(scope) else ""
    return f"{COOKIE}={session}; Path=/; Max-Age={int(ttl)}; HttpOnly; SameSite=Strict{secure}"


def clear_cookie_header(scope: Scope) -> str:
    secure = "; Secure" if is_https(scope) else ""
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"


async def require_admin_cookie(scope: Scope) -> None:
    """Let a cookie-authenticated dashboard call through, or raise the error to answer with."""
    session = session_id(scope)
    if session is None:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer <key>', or log in to the dashboard.",
            code="missing_api_key",
        )
    redis: Redis = scope["app"].state.redis
    try:
        valid = await is_valid(redis, session)
    except (RedisError, OSError) as exc:
        raise redis_trouble.unavailable(exc) from exc
    if not valid:
        raise AuthenticationFailed("The dashboard session has ended: log in again.", code="session_expired")
    headers = Headers(scope=scope)
    if HEADER not in headers:
        raise PermissionDenied(
            "A call authenticated by the dashboard cookie needs the X-Dashboard header.", code="csrf_check_failed"
        )
    if scope.get("method", "GET") not in SAFE_METHODS and not same_origin(scope):
        raise PermissionDenied("Cross-origin call refused.", code="csrf_check_failed")
