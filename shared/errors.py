"""The gateway's error types. Each knows its HTTP status and OpenAI error type/code.

One hierarchy serves both sides: the worker sends a :class:`GatewayError` over the job's
channel as a dict (:meth:`GatewayError.to_wire`), and the API renders it either as a JSON
error body (before a stream starts) or as an SSE error event (after).
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; raised at start-up, never to a client."""


class GatewayError(Exception):
    """An error the client sees, in OpenAI's ``{"error": {...}}`` envelope."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """OpenAI's error envelope."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """Headers that go with the error (``Retry-After`` where the client should wait)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}

    def to_wire(self) -> dict[str, Any]:
        """A plain dict for the job channel; :func:`from_wire` rebuilds the error."""
        return {
            "status": self.status,
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "retry_after": self.retry_after,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


def from_wire(data: dict[str, Any]) -> GatewayError:
    """Rebuild an error sent by :meth:`GatewayError.to_wire` (unknown shapes become a 502)."""
    err = GatewayError(
        str(data.get("message") or "upstream error"),
        param=data.get("param"),
        code=data.get("code"),
        status=int(data.get("status") or 502),
        retry_after=data.get("retry_after"),
    )
    err.type = str(data.get("type") or "upstream_error")
    return err


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"  # every 400 has a code a client can branch on; most raise sites name a closer one


class Unsupported(InvalidRequest):
    """A parameter the upstream cannot honour."""

    code = "unsupported_parameter"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """decopy answered with something other than an answer."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """decopy is blocking or throttling us (Cloudflare challenge, 429) or is down."""

    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    """The gateway itself cannot take the request now (queue full, Redis down, draining)."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


class RedisUnavailable(ServiceUnavailable):
    """Redis does not answer, or refuses: the one error for that, wherever it is met (503
    ``redis_unavailable``, ``Retry-After: 2``). Built from a Redis error by
    :func:`shared.redis_trouble.unavailable`, the message says what Redis did (unreachable, out of
    memory, read-only, loading), never its address; else it may say what could not be done."""

    code = "redis_unavailable"

    def __init__(
        self, message: str = "The gateway cannot reach Redis right now; try again shortly.", *, retry_after: float = 2
    ) -> None:
        super().__init__(message, retry_after=retry_after)


class GatewayTimeout(GatewayError):
    status = 504
    type = "server_error"
    code = "timeout"


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    code = "internal_error"
