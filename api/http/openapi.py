"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Request bodies are the pydantic models of :mod:`api.dialects.chat.schema` (their JSON Schema, which OpenAPI
3.1 takes as it is); responses are the hand-written schemas in :data:`RESPONSE_SCHEMAS`; every
error answer is OpenAI's envelope (``Error``).

**Adding an endpoint is one entry in** :data:`ENDPOINTS`, for example::

    Endpoint("POST", "/admin/keys", "Create an API key", ok="ApiKeyCreated", status=201,
             request=CreateKeyRequest, errors=(400,), auth="master"),

``request`` is a pydantic model (its schema lands in ``components`` by itself); ``ok`` names the
success body: a pydantic model, or a key of :data:`RESPONSE_SCHEMAS` (add the schema there).
Path parameters (``{id}``) are found in the path. 401 (for ``auth="key"`` or ``"master"``; 403
too for ``"master"``) and the 503 of a draining instance are added to every endpoint that can
answer them. ``tests/test_reliability_input.py`` fails when a route of the app is missing here
(or an entry has no route), and validates the document against the OpenAPI 3.1 meta-schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.dialects.chat.schema import ChatCompletionRequest
from api.dialects.completions.schema import CompletionRequest
from api.dialects.messages.schema import CountTokensRequest, MessagesRequest
from api.dialects.responses.schema import ResponsesRequest
from api.http.shutdown import DRAIN_EXEMPT
from api.tenancy.keys import NewKey
from api.tenancy.routing_schema import SCHEMAS as ROUTING_SCHEMAS
from api.tenancy.routing_schema import RouteBody, RouteReplacement, UpstreamBody, UpstreamReplacement
from api.tenancy.weights import WeightBody

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


_NULL_STR: dict[str, Any] = {"type": ["string", "null"]}
#: The calls of an answer with emulated tool calling (docs/tools.md).
_TOOL_CALLS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            },
        },
    },
}
_USAGE: dict[str, Any] = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
    "description": "Estimated: decopy reports no token counts.",
}

#: Hand-written response schemas, by name (``components/schemas``).
RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _NULL_STR,
                    "code": _NULL_STR,
                },
            }
        },
        "description": "OpenAI's error envelope; also the last event of a stream that failed after it started.",
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": {"type": "null"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": _NULL_STR,
                                "reasoning_content": {"type": "string"},
                                "refusal": {"type": "null"},
                                "tool_calls": _TOOL_CALLS,
                            },
                        },
                        "logprobs": {"type": "null"},
                        "finish_reason": {"type": "string"},
                    },
                },
            },
            "usage": _USAGE,
        },
    },
    "ChatCompletionChunk": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion.chunk"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "delta"],
                    "properties": {
                        "index": {"type": "integer"},
                        "delta": {"type": "object"},
                        "finish_reason": _NULL_STR,
                    },
                },
            },
            "usage": _USAGE,
        },
        "description": "One event of a stream: `data: <ChatCompletionChunk>`.",
    },
    "ChatCompletionStream": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "description": "A `ChatCompletionChunk` as JSON, an `Error` as JSON "
                "(a failure after the stream started), or `[DONE]`.",
            },
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
        "description": "One server-sent event of a stream (`stream: true`). The stream is `data: "
        "<ChatCompletionChunk JSON>` events, SSE comments (`: ping`) while waiting, and "
        "`data: [DONE]` at the end; a failure after the stream started is a last `data: "
        "<Error JSON>` event instead.",
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "upstream": {"type": "string"},
            "targets": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The route's targets in order (`upstream/model`): a failure before the "
                "first piece of the answer moves to the next.",
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
    },
    "Text": {"type": "string"},
    "OpenAPI": {"type": "object", "description": "This document."},
    "Metrics": {
        "type": "string",
        "description": "Prometheus text exposition format (see docs/operations.md, Metrics).",
    },
    "Usage": {
        "type": "object",
        "properties": {
            k: {"type": "integer", "minimum": 0}
            for k in ("requests", "prompt_tokens", "completion_tokens", "errors", "rejections")
        },
        "description": "A key's counters (tokens are estimates).",
    },
    "ApiKey": {
        "type": "object",
        "required": ["id", "name", "rpm", "max_concurrent", "daily_tokens", "created"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "rpm": {"type": ["integer", "null"]},
            "max_concurrent": {"type": ["integer", "null"]},
            "daily_tokens": {"type": ["integer", "null"]},
            "created": {"type": "integer"},
            "usage_today": _ref("Usage"),
        },
    },
    "ApiKeyCreated": {
        "allOf": [
            _ref("ApiKey"),
            {
                "type": "object",
                "required": ["key"],
                "properties": {
                    "key": {"type": "string", "description": "The secret (`sk-...`), shown only in this answer."}
                },
            },
        ],
    },
    "ApiKeyList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("ApiKey")}},
    },
    "ApiKeyDeleted": {
        "type": "object",
        "required": ["id", "deleted"],
        "properties": {"id": {"type": "string"}, "deleted": {"const": True}},
    },
    "UsageList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "today", "total"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "today": _ref("Usage"),
                        "total": _ref("Usage"),
                    },
                },
            },
        },
    },
    "DoctorStatus": {
        "type": "object",
        "required": ["last", "pending"],
        "properties": {
            "last": {
                "type": ["object", "null"],
                "description": "The last doctor report (`python -m worker doctor --json`).",
            },
            "pending": {"type": ["object", "null"], "description": "`{job_id, requested}` of a run not finished yet."},
            "started": {"type": "boolean", "description": "POST only: whether this call queued a new run."},
        },
    },
    "ClusterStats": {
        "type": "object",
        "required": [
            "time",
            "requests_per_second",
            "requests_total",
            "ttft_p50_ms",
            "ttft_p99_ms",
            "streams_in_flight",
            "queue_depth",
            "workers",
            "upstream_errors",
            "rate_limit_rejections",
            "history",
        ],
        "description": "Figures across every API replica and worker (see docs/operations.md, Metrics).",
    },
    # --- the request log and the fair queue's weights ---
    "RequestLogPage": {
        "type": "object",
        "required": ["object", "data", "next_cursor", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("RequestLogEntry")},
            "next_cursor": _NULL_STR,
            "has_more": {"type": "boolean"},
        },
        "description": "Newest first; pass next_cursor back as cursor for the next page (docs/teams.md).",
    },
    "RequestLogEntry": {
        "type": "object",
        "required": ["id", "time", "request_id", "key_id", "key_name", "dialect", "status"],
        "properties": {
            "id": {"type": "string"},
            "time": {"type": "number"},
            "request_id": _NULL_STR,
            "key_id": {"type": "string"},
            "key_name": {"type": "string"},
            "dialect": {"type": "string"},
            "model": _NULL_STR,
            "target": _NULL_STR,
            "status": {"type": "integer"},
            "error_code": _NULL_STR,
            "tokens_in": {"type": ["integer", "null"]},
            "tokens_out": {"type": ["integer", "null"]},
            "ttft_ms": {"type": ["number", "null"]},
            "duration_ms": {"type": ["number", "null"]},
            "queue_wait_ms": {"type": ["number", "null"]},
            "client": _NULL_STR,
        },
    },
    "RequestLogLines": {"type": "string", "description": "One RequestLogEntry per line (JSON lines)."},
    "WeightList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Weight")}},
    },
    "Weight": {
        "type": "object",
        "required": ["key_id", "weight"],
        "properties": {"key_id": {"type": "string"}, "name": {"type": "string"}, "weight": {"type": "number"}},
    },
}

_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

#: The Anthropic Messages API's shapes (``/v1/messages``; its errors are Anthropic's too).
RESPONSE_SCHEMAS.update(
    {
        "AnthropicError": {
            "type": "object",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "description": "Anthropic's error shape; also the data of a stream's `event: error`.",
        },
        "AnthropicMessage": {
            "type": "object",
            "required": ["id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": {"type": "string"},
                "content": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["text", "thinking", "tool_use"]}},
                    },
                },
                "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use"]},
                "stop_sequence": _NULL_STR,
                "usage": {
                    "type": "object",
                    "required": ["input_tokens", "output_tokens"],
                    "properties": {
                        "input_tokens": {"type": "integer", "minimum": 0},
                        "output_tokens": {"type": "integer", "minimum": 0},
                    },
                    "description": "Estimated: decopy reports no token counts.",
                },
            },
        },
        "AnthropicMessageStream": {
            **_SSE_EVENT,
            "description": "One server-sent event of a stream: `event: <type>` and `data: <JSON>` in Anthropic's "
            "order (`message_start`, `content_block_start`, `content_block_delta`, `content_block_stop`, "
            "`message_delta`, `message_stop`), `ping` while waiting, `error` for a failure after the start.",
        },
        "TokenCount": {
            "type": "object",
            "required": ["input_tokens"],
            "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
            "description": "The gateway's estimate of the prompt it would send.",
        },
    }
)

#: Legacy completions' shapes (``/v1/completions``).
RESPONSE_SCHEMAS.update(
    {
        "Completion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "text_completion"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["text", "index", "finish_reason"],
                        "properties": {
                            "text": {"type": "string"},
                            "index": {"type": "integer"},
                            "finish_reason": _NULL_STR,
                        },
                    },
                },
                "usage": _USAGE,
            },
        },
        "CompletionStream": {
            **_SSE_EVENT,
            "description": "One server-sent event of a stream: `data: <Completion JSON>` chunks, SSE comments "
            "(`: ping`) while waiting, `data: [DONE]` at the end (or `data: <Error JSON>` after a failure).",
        },
    }
)

#: The Responses API's shapes (``/v1/responses``).
RESPONSE_SCHEMAS.update(
    {
        "Response": {
            "type": "object",
            "required": ["id", "object", "created_at", "status", "model", "output"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "response"},
                "created_at": {"type": "integer"},
                "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
                "model": {"type": "string"},
                "output": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "id"],
                        "properties": {"type": {"enum": ["message", "reasoning", "function_call"]}},
                    },
                },
                "error": {"type": ["object", "null"]},
                "incomplete_details": {"type": ["object", "null"]},
                "previous_response_id": _NULL_STR,
                "usage": {
                    "type": ["object", "null"],
                    "properties": {
                        k: {"type": "integer", "minimum": 0} for k in ("input_tokens", "output_tokens", "total_tokens")
                    },
                    "description": "Estimated: decopy reports no token counts.",
                },
            },
        },
        "ResponseStream": {
            **_SSE_EVENT,
            "description": "One server-sent event of a stream: `event: <type>` and `data: <JSON>` with a rising "
            "`sequence_number`, from `response.created` to exactly one of `response.completed`, "
            "`response.incomplete` or `response.failed`; SSE comments (`: ping`) while waiting; no `[DONE]`.",
        },
        "ResponseInputItems": {
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": {"type": "object"}},
                "first_id": _NULL_STR,
                "last_id": _NULL_STR,
                "has_more": {"type": "boolean"},
            },
        },
        "ResponseDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}},
        },
    }
)

_ERRORS: dict[int, str] = {
    400: "The request is invalid; `error.param` names the field when there is one.",
    401: "Missing or wrong API key.",
    403: "Not allowed (the admin API needs the master key, and is off without one).",
    404: "Unknown model or route.",
    405: "Method not allowed.",
    413: "The body is larger than MAX_BODY_BYTES.",
    415: "The body is not JSON.",
    429: "Rate limited.",
    502: "decopy answered with an error; the message says what it did.",
    503: "The gateway is busy (full queue, queue timeout), cannot reach Redis, is shutting down, or decopy "
    "is blocking or throttling it; see `Retry-After`.",
    504: "decopy or the worker took too long.",
}


@dataclass(frozen=True)
class Endpoint:
    """One operation of the document (see the module docstring)."""

    method: str
    path: str
    summary: str
    ok: str | type[BaseModel]
    status: int = 200
    request: type[BaseModel] | None = None
    errors: Sequence[int] = ()
    auth: Literal["none", "key", "master"] = "key"
    media: str = "application/json"
    stream: str | None = None  # RESPONSE_SCHEMAS key of the text/event-stream variant of the success body
    description: str | None = None
    error: str = "Error"  # RESPONSE_SCHEMAS key of the error body (Anthropic's routes have their own)


#: Every public endpoint. One entry per operation; keep in step with the routes.
ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/v1/chat/completions",
        "Create a chat completion (whole, or streamed with `stream: true`)",
        ok="ChatCompletion",
        stream="ChatCompletionStream",
        request=ChatCompletionRequest,
        errors=(400, 404, 413, 415, 429, 502, 503, 504),
    ),
    Endpoint(
        "POST",
        "/v1/messages",
        "Create a message, Anthropic's Messages API (whole, or streamed with `stream: true`)",
        ok="AnthropicMessage",
        stream="AnthropicMessageStream",
        request=MessagesRequest,
        errors=(400, 404, 413, 415, 429, 502, 503, 504),
        error="AnthropicError",
        description="Authenticate with `x-api-key` or `Authorization: Bearer`; `anthropic-version` is accepted.",
    ),
    Endpoint(
        "POST",
        "/v1/messages/count_tokens",
        "Count a message's input tokens (the gateway's estimate)",
        ok="TokenCount",
        request=CountTokensRequest,
        errors=(400, 404, 413, 415, 429),
        error="AnthropicError",
    ),
    Endpoint(
        "POST",
        "/v1/responses",
        "Create a response, OpenAI's Responses API (whole, or streamed with `stream: true`)",
        ok="Response",
        stream="ResponseStream",
        request=ResponsesRequest,
        errors=(400, 404, 413, 415, 429, 502, 503, 504),
    ),
    Endpoint(
        "GET",
        "/v1/responses/{response_id}",
        "Retrieve a stored response (the caller's own, within RESPONSES_TTL_SECONDS)",
        ok="Response",
        errors=(404,),
    ),
    Endpoint("DELETE", "/v1/responses/{response_id}", "Delete a stored response", ok="ResponseDeleted", errors=(404,)),
    Endpoint(
        "GET",
        "/v1/responses/{response_id}/input_items",
        "List a stored response's input items (`order`, `limit`, `after`)",
        ok="ResponseInputItems",
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/v1/completions",
        "Create a legacy completion from one prompt (whole, or streamed with `stream: true`)",
        ok="Completion",
        stream="CompletionStream",
        request=CompletionRequest,
        errors=(400, 404, 413, 415, 429, 502, 503, 504),
    ),
    Endpoint("GET", "/v1/models", "List the models", ok="ModelList"),
    Endpoint(
        "GET", "/v1/models/{model_id}", "Retrieve a model (by id or decopy's own name)", ok="Model", errors=(404,)
    ),
    Endpoint("GET", "/healthz", "The process is alive", ok="Text", media="text/plain", auth="none"),
    Endpoint(
        "GET",
        "/readyz",
        "Ready to take requests (503 with the reason, e.g. `draining`, if not)",
        ok="Text",
        media="text/plain",
        auth="none",
        errors=(503,),
    ),
    Endpoint("GET", "/openapi.json", "This document", ok="OpenAPI", auth="none"),
    Endpoint(
        "GET",
        "/metrics",
        "Prometheus metrics of this API container's processes",
        ok="Metrics",
        media="text/plain",
        auth="none",
    ),
    Endpoint(
        "GET",
        "/metrics/cluster",
        "Prometheus metrics of every worker, the queue and live workers",
        ok="Metrics",
        media="text/plain",
        auth="none",
    ),
    Endpoint(
        "GET",
        "/admin/stats",
        "Cluster-wide figures and a 15-minute history",
        ok="ClusterStats",
        auth="master",
        errors=(503,),
    ),
    Endpoint(
        "POST",
        "/admin/keys",
        "Create a team API key (the secret is shown only here)",
        ok="ApiKeyCreated",
        status=201,
        request=NewKey,
        errors=(400, 503),
        auth="master",
    ),
    Endpoint(
        "GET",
        "/admin/keys",
        "List the team keys with their limits and today's usage",
        ok="ApiKeyList",
        auth="master",
        errors=(503,),
    ),
    Endpoint(
        "DELETE",
        "/admin/keys/{key_id}",
        "Revoke a team key on every replica",
        ok="ApiKeyDeleted",
        auth="master",
        errors=(404, 503),
    ),
    Endpoint("GET", "/admin/usage", "Usage per key, today and in total", ok="UsageList", auth="master", errors=(503,)),
    Endpoint(
        "GET",
        "/admin/doctor",
        "The last upstream doctor report, and a run still pending",
        ok="DoctorStatus",
        auth="master",
        errors=(503,),
    ),
    Endpoint(
        "POST",
        "/admin/doctor",
        "Queue an upstream doctor run (a worker runs it)",
        ok="DoctorStatus",
        status=202,
        auth="master",
        errors=(503,),
    ),
    # --- the request log and the fair queue's weights ---
    Endpoint(
        "GET",
        "/admin/requests",
        "The request log: every key's chat requests, newest first",
        ok="RequestLogPage",
        auth="master",
        errors=(400, 503),
        description="Query: key (id or name), model, status (200, 4xx, 5xx, ok, error), dialect, since, until "
        "(unix seconds or ISO 8601), limit (1-1000), cursor; format=jsonl streams every match as JSON lines.",
    ),
    Endpoint(
        "GET",
        "/v1/gateway/requests",
        "The calling key's own requests from the request log",
        ok="RequestLogPage",
        errors=(400, 503),
        description="The filters of GET /admin/requests, always limited to the calling key.",
    ),
    Endpoint("GET", "/admin/weights", "Every key's weight in the fair queue", ok="WeightList", auth="master"),
    Endpoint(
        "PUT",
        "/admin/weights/{key_id}",
        "Set a key's weight in the fair queue (key_id: a team key, master or dashboard)",
        ok="Weight",
        request=WeightBody,
        auth="master",
        errors=(400, 404, 415),
    ),
    Endpoint(
        "DELETE",
        "/admin/weights/{key_id}",
        "Put a key's weight back to 1",
        ok="Weight",
        auth="master",
        errors=(404,),
    ),
    # the live routing configuration (docs/upstreams.md)
    Endpoint(
        "GET", "/admin/upstreams", "Upstreams with their targets' circuit breakers", ok="UpstreamList", auth="master"
    ),
    Endpoint(
        "POST",
        "/admin/upstreams",
        "Add an upstream (its API key only as the name of an environment variable)",
        ok="Upstream",
        status=201,
        request=UpstreamBody,
        errors=(400, 413, 415),
        auth="master",
    ),
    Endpoint(
        "PUT",
        "/admin/upstreams/{name}",
        "Replace an upstream",
        ok="Upstream",
        request=UpstreamReplacement,
        errors=(400, 404, 413, 415),
        auth="master",
    ),
    Endpoint(
        "DELETE",
        "/admin/upstreams/{name}",
        "Delete an upstream no route uses",
        ok="UpstreamDeleted",
        errors=(400, 404),
        auth="master",
    ),
    Endpoint("GET", "/admin/routes", "Every route (model id and its targets, in order)", ok="RouteList", auth="master"),
    Endpoint(
        "POST",
        "/admin/routes",
        "Add a route (400 if a target names no upstream)",
        ok="Route",
        status=201,
        request=RouteBody,
        errors=(400, 413, 415),
        auth="master",
    ),
    Endpoint(
        "PUT",
        "/admin/routes/{route_id}",
        "Replace a route's targets (a default route's too)",
        ok="Route",
        request=RouteReplacement,
        errors=(400, 404, 413, 415),
        auth="master",
    ),
    Endpoint(
        "DELETE",
        "/admin/routes/{route_id}",
        "Delete a stored route (a default one comes back)",
        ok="RouteDeleted",
        errors=(400, 404),
        auth="master",
    ),
]

#: Paths of the browser dashboard (HTML pages, its static files and the page's own calls) and the
#: icon browsers ask for: a user interface, not part of the API this document describes.
UI_PREFIX = ("/dashboard", "/favicon.ico")


def _content(schema: dict[str, Any], media: str) -> dict[str, Any]:
    return {media: {"schema": schema}}


def _schema_of(ok: str | type[BaseModel]) -> dict[str, Any]:
    return _ref(ok if isinstance(ok, str) else ok.__name__)


def _operation(ep: Endpoint, model_ids: Sequence[str]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": ep.summary, "operationId": _operation_id(ep)}
    if ep.description:
        op["description"] = ep.description
    params = re.findall(r"{(\w+)}", ep.path)
    if params:
        op["parameters"] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "examples": list(model_ids)} if p == "model_id" else {"type": "string"},
            }
            for p in params
        ]
    if ep.request is not None:
        op["requestBody"] = {"required": True, "content": _content(_ref(ep.request.__name__), "application/json")}
    ok = _content(_schema_of(ep.ok), ep.media)
    if ep.stream:
        ok.update(_content(_ref(ep.stream), "text/event-stream"))
    responses: dict[str, Any] = {str(ep.status): {"description": "Success.", "content": ok}}
    errors = set(ep.errors)
    if ep.auth != "none":
        errors.add(401)
    if ep.auth == "master":
        errors.add(403)
    if ep.path not in DRAIN_EXEMPT:
        errors.add(503)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERRORS[status],
            "content": _content(_ref(ep.error), "application/json"),
        }
    op["responses"] = responses
    if ep.auth != "none":
        op["security"] = [{"bearer": []}] if ep.auth == "master" else [{"bearer": []}, {"apiKey": []}, {}]
    return op


def _operation_id(ep: Endpoint) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", ep.path).strip("_")
    return f"{ep.method.lower()}_{words}"


def build_document(model_ids: Sequence[str], endpoints: Sequence[Endpoint] = ENDPOINTS) -> dict[str, Any]:
    """The whole document; ``model_ids`` (the configured model table) become the examples of ``model``."""
    models = [ep.request for ep in endpoints if ep.request is not None]
    models += [ep.ok for ep in endpoints if not isinstance(ep.ok, str)]
    schemas: dict[str, Any] = {**RESPONSE_SCHEMAS, **ROUTING_SCHEMAS}
    if models:
        _, defs = models_json_schema([(m, "validation") for m in dict.fromkeys(models)], ref_template=REF)
        schemas.update(defs.get("$defs", {}))
    request = schemas.get(ChatCompletionRequest.__name__)
    if request is not None and model_ids:
        # Any name is accepted by the schema (an unknown one is a 404); the configured ids are listed.
        request["properties"]["model"]["examples"] = list(model_ids)
        request["properties"]["model"]["description"] = (
            "A model id from GET /v1/models, or decopy's own model name (case-insensitive)."
        )
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, model_ids)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "decopy gateway",
            "version": "0.1.0",
            "description": "An OpenAI-compatible API in front of decopy.ai's chat. Errors use OpenAI's envelope.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>` (needed when API_MASTER_KEY is set).",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "`x-api-key: <key>`, as Anthropic's clients send it (`/v1/*` only).",
                },
            },
        },
    }
