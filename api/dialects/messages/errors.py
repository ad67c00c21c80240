"""Anthropic's error shape: ``{"type": "error", "error": {"type": …, "message": …}}``.

Kept apart from the rest of the dialect (and free of imports from ``api``) because the one error
renderer of the HTTP layer (:func:`api.http.responses.error_response`) uses it for every error
on an Anthropic route, including those the middleware raises before any route runs.
"""

from __future__ import annotations

from typing import Any

from shared.errors import GatewayError

#: Anthropic's error type for each HTTP status the gateway answers with.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(exc: GatewayError) -> str:
    """Anthropic's type for a gateway error: by status; other 4xx are invalid requests, other 5xx api errors."""
    return _TYPES.get(exc.status) or ("invalid_request_error" if exc.status < 500 else "api_error")


def error_body(exc: GatewayError) -> dict[str, Any]:
    """The body of an error answer, and the data of a stream's ``error`` event.

    Anthropic's shape has no ``param``: the field at fault leads the message, as Anthropic
    writes it (``messages.0.content: …``).
    """
    message = exc.message
    if exc.param and exc.param not in message:
        message = f"{exc.param}: {message}"
    return {"type": "error", "error": {"type": error_type(exc), "message": message}}


def wants_anthropic_errors(path: str, has_version_header: bool) -> bool:
    """Errors on ``/v1/messages…`` are Anthropic's; so are those of ``/v1/models…`` when the client
    sent ``anthropic-version`` (the Anthropic SDKs list models there too)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return True
    return has_version_header and (path == "/v1/models" or path.startswith("/v1/models/"))
