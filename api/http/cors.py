"""CORS for browser front ends, on ``/v1/*`` only: Starlette's own ``CORSMiddleware``, scoped by path.

Off unless ``CORS_ALLOW_ORIGINS`` lists origins (or ``*``). Preflights are answered before the
auth middleware (a browser sends no key with them), and every ``/v1/*`` answer to a listed
origin, errors included, carries ``Access-Control-Allow-Origin`` so the page can read it. The
admin API and the dashboard never answer cross-origin calls: the dashboard is same-origin, and a
page elsewhere must not drive the admin API with an operator's cookie.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

#: What the OpenAI and Anthropic SDKs send from a browser (the Stainless-generated SDKs add the
#: ``x-stainless-*`` headers; Anthropic's browser mode its ``anthropic-dangerous-…`` opt-in).
ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "x-request-id",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
#: Answer headers a page may read: the request id, the rate-limit state, when to retry.
EXPOSE_HEADERS = (
    "x-request-id",
    "retry-after",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)
PREFIX = "/v1/"


class APICorsMiddleware:
    """Starlette's ``CORSMiddleware`` for ``/v1/*``; every other path passes by it untouched."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=list(ALLOW_HEADERS),
            expose_headers=list(EXPOSE_HEADERS),
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PREFIX):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)
