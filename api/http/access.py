"""The access log and the per-request metrics, from one pure ASGI middleware.

Each request gets one JSON log line (logger ``api.access``) when its response has ended — for a
stream, after its last event — and is counted once in :mod:`shared.metrics`. Route handlers add
what only they know with :func:`note` (the model, the job's feed); the auth layer puts the key's
*name* (never the key) in ``scope["state"]["key_name"]``.

Prompts and answers are logged only with ``LOG_PROMPTS=true``: the middleware then keeps a copy
of the request body and of the response it relays (up to ``_CAPTURE_LIMIT`` bytes each).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.tenancy import requestlog
from shared import metrics
from shared.logs import request_id_var

log = logging.getLogger("api.access")

_CAPTURE_LIMIT = 256 * 1024
_ERROR_BODY_LIMIT = 8 * 1024
_TEXT_LIMIT = 4000  # characters of one logged message or answer
#: Probes and scrapes: counted, but logged at DEBUG so they do not drown the requests.
_QUIET = ("/healthz", "/readyz", "/metrics")


def note(request: Request, **fields: Any) -> None:
    """Tell the access log about this request (``model=``, ``job=`` the JobFeed, ``key_name=``)."""
    request.scope.setdefault("state", {}).setdefault("obs", {}).update(fields)


#: The dialect of a request the engine never saw (refused before parsing), by its path.
_DIALECT_PATHS = (
    ("/v1/chat/completions", "chat"),
    ("/v1/responses", "responses"),
    ("/v1/messages", "messages"),
    ("/v1/completions", "completions"),
)


def dialect_of(path: str) -> str | None:
    """The dialect a path belongs to (``/v1/messages/count_tokens`` is Anthropic's too), or None."""
    for prefix, dialect in _DIALECT_PATHS:
        if path == prefix or path.startswith(prefix + "/"):
            return dialect
    return None


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    if route is None:  # answered before routing (auth, body limits): find the route it was meant for
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    return str(getattr(route, "path", "other"))


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + f"...[{len(text) - _TEXT_LIMIT} more]"


_TEXT_PARTS = ("text", "input_text", "output_text")


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # text parts only: an image's data is no log material
        return "\n".join(
            p.get("text", "") if p.get("type") in _TEXT_PARTS else f"<{p.get('type')}>"
            for p in content
            if isinstance(p, dict)
        )
    return str(content or "")


def _prompt_of(body: bytes) -> list[dict[str, str]] | None:
    """The conversation of a request in any dialect: chat and Anthropic ``messages`` (and
    ``system``), Responses ``instructions`` and ``input``, a completion's ``prompt``."""
    try:
        data = orjson.loads(body)
        out = []
        for role, field in (("system", "system"), ("system", "instructions"), ("user", "prompt")):
            if data.get(field):
                out.append({"role": role, "content": _clip(_text_of(data[field]))})
        given = data.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
        for msg in [*(data.get("messages") or []), *items]:
            role = msg.get("role") or msg.get("type")
            content = msg.get("content", msg.get("output", msg.get("arguments")))
            out.append({"role": str(role), "content": _clip(_text_of(content))})
        return out
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None


def _whole_text(data: dict[str, Any]) -> str:
    if "choices" in data:  # chat, or a legacy completion
        choice = data["choices"][0]
        return str(choice["message"]["content"] or "") if "message" in choice else str(choice.get("text") or "")
    if data.get("type") == "message":  # Anthropic
        return "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
    return "".join(  # a Responses API response
        p.get("text", "") for item in data["output"] if item.get("type") == "message" for p in item["content"]
    )


def _delta_text(event: dict[str, Any]) -> str:
    choices = event.get("choices")
    if choices:
        return str(choices[0].get("delta", {}).get("content") or choices[0].get("text") or "")
    kind = event.get("type")
    if kind == "content_block_delta":
        return str(event["delta"].get("text") or "")
    return str(event.get("delta") or "") if kind == "response.output_text.delta" else ""


def _answer_of(body: bytes, sse: bool) -> str | None:
    try:
        if not sse:
            return _clip(_whole_text(orjson.loads(body)))
        parts: list[str] = []
        for line in body.split(b"\n"):
            if line.startswith(b"data: {"):
                parts.append(_delta_text(orjson.loads(line[6:])))
        return _clip("".join(parts))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return None


class AccessLogMiddleware:
    """Logs and counts each HTTP request once, when its response is over (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, log_prompts: bool = False) -> None:
        self.app = app
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        state = scope.setdefault("state", {})
        token = request_id_var.set(state.get("request_id"))
        status = 0
        sse = False
        sent = 0
        capture = False
        request_body = bytearray()
        response_body = bytearray()

        async def receive_copy() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request_body) < _CAPTURE_LIMIT:
                request_body.extend(message.get("body", b""))
            return message

        async def send_counted(message: Message) -> None:
            nonlocal status, sse, sent, capture
            if message["type"] == "http.response.start":
                status = message["status"]
                sse = Headers(raw=message.get("headers", [])).get("content-type", "").startswith("text/event-stream")
                capture = self.log_prompts or status >= 400
                waited = requestlog.queue_wait_header(state)  # x-queue-wait-ms on every chat answer
                if waited is not None:
                    message = {**message, "headers": [*message.get("headers", []), waited]}
                if sse:
                    metrics.STREAMS_IN_FLIGHT.inc()
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                limit = _CAPTURE_LIMIT if self.log_prompts else _ERROR_BODY_LIMIT
                if capture and len(response_body) < limit:
                    response_body.extend(body)
            await send(message)

        try:
            await self.app(scope, receive_copy if self.log_prompts else receive, send_counted)
        except BaseException:
            if not status:
                status = 500
            raise
        finally:
            if sse:
                metrics.STREAMS_IN_FLIGHT.dec()
            try:
                self._record(scope, state, started, status, sse, sent, bytes(request_body), bytes(response_body))
            finally:
                request_id_var.reset(token)

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        started: float,
        status: int,
        sse: bool,
        sent: int,
        request_body: bytes,
        response_body: bytes,
    ) -> None:
        duration = time.monotonic() - started
        obs: dict[str, Any] = state.get("obs", {})
        job = obs.get("job")
        ttft = queue_wait = None
        if job is not None:
            if job.first_token is not None:
                ttft = job.first_token - started
            if job.started is not None:
                queue_wait = job.started - job.created
        route = _route_of(scope)
        model = obs.get("model")
        status = status or 499  # the client left before any response started
        upstream = job.upstream if job is not None else None
        path = scope.get("path", "")
        dialect = obs.get("dialect") or dialect_of(path)
        metrics.observe_request(
            route=route,
            status=status,
            model=model,
            duration=duration,
            ttft=ttft,
            queue_wait=queue_wait,
            dialect=dialect,
            upstream=upstream,
        )
        fields: dict[str, Any] = {
            "method": scope.get("method"),
            "path": path,
            "route": route,
            "status": status,
            "model": model,
            "dialect": dialect,
            "key_name": obs.get("key_name") or state.get("key_name"),
            "stream": sse,
            "duration_ms": round(duration * 1000, 1),
            "queue_wait_ms": None if queue_wait is None else round(queue_wait * 1000, 1),
            "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
            "bytes": sent,
        }
        if job is not None:
            fields["job_id"] = job.job_id
            fields["worker"] = job.worker
            fields["upstream"] = job.upstream
        if status >= 400 and response_body and not sse:
            try:
                error = orjson.loads(response_body)["error"]
                fields["error_code"] = error.get("code") or error.get("type")  # Anthropic's errors have a type
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        if self.log_prompts:
            fields["prompt"] = _prompt_of(request_body)
            fields["answer"] = _answer_of(response_body, sse) if status < 400 else None
        level = logging.DEBUG if path.startswith(_QUIET) and status < 400 else logging.INFO
        log.log(level, "%s %s %s", scope.get("method"), path, status, extra=fields)
        requestlog.collect(scope, fields, started)  # the request log's entry, written off this path
