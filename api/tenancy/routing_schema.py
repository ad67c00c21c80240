"""What ``/admin/upstreams`` and ``/admin/routes`` take and answer, for the OpenAPI document.

The handlers (:mod:`api.tenancy.routing_admin`) validate with :mod:`shared.routing`, which is
stricter (names, URLs, the variable's name); these models and schemas describe the shapes, and
anything outside them is refused with a 400 there too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr


class UpstreamBody(BaseModel):
    """``POST /admin/upstreams``: a new upstream (the key itself never: the variable holding it)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    kind: Literal["openai", "decopy"]
    base_url: StrictStr
    api_key_env: StrictStr | None = None
    api_key_header: StrictStr | None = None
    headers: dict[str, StrictStr] = {}
    native_tools: StrictBool = False


class UpstreamReplacement(UpstreamBody):
    """``PUT /admin/upstreams/{name}``: the upstream's new fields (``name``, if given, as in the URL)."""

    name: StrictStr | None = None  # type: ignore[assignment]  # optional here: the URL names it


class TargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream: StrictStr
    model: StrictStr


class RouteBody(BaseModel):
    """``POST /admin/routes``: a model id and its targets, in order."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    targets: list[TargetBody]


class RouteReplacement(RouteBody):
    """``PUT /admin/routes/{route_id}``: the route's targets (``id``, if given, as in the URL)."""

    id: StrictStr | None = None  # type: ignore[assignment]  # optional here: the URL names it


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_NULLABLE_STR: dict[str, Any] = {"type": ["string", "null"]}
_TARGET: dict[str, Any] = {
    "type": "object",
    "required": ["upstream", "model"],
    "properties": {"upstream": {"type": "string"}, "model": {"type": "string"}},
}

#: Response schemas, added to the document's own.
SCHEMAS: dict[str, Any] = {
    "Breaker": {
        "type": "object",
        "required": ["target", "state", "failures"],
        "properties": {
            "target": {"type": "string", "description": "`upstream/model`"},
            "state": {"enum": ["closed", "half_open", "open"]},
            "failures": {"type": "integer"},
            "opened_at": {"type": ["number", "null"]},
            "retry_at": {"type": ["number", "null"], "description": "When an open breaker lets one request try."},
            "last_failure": _NULLABLE_STR,
            "last_failure_at": {"type": ["number", "null"]},
        },
    },
    "Upstream": {
        "type": "object",
        "required": ["name", "kind", "base_url", "api_key_env", "headers", "native_tools", "builtin"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"enum": ["openai", "decopy"]},
            "base_url": {"type": "string"},
            "api_key_env": {**_NULLABLE_STR, "description": "The NAME of the variable holding the key."},
            "api_key_header": _NULLABLE_STR,
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "native_tools": {"type": "boolean"},
            "builtin": {"type": "boolean"},
            "targets": {"type": "array", "items": _ref("Breaker")},
            "version": {"type": "integer", "description": "The configuration's version after a change."},
        },
    },
    "UpstreamList": {
        "type": "object",
        "required": ["object", "version", "data"],
        "properties": {
            "object": {"const": "list"},
            "version": {"type": "integer"},
            "data": {"type": "array", "items": _ref("Upstream")},
        },
    },
    "UpstreamDeleted": {
        "type": "object",
        "required": ["name", "deleted", "version"],
        "properties": {"name": {"type": "string"}, "deleted": {"const": True}, "version": {"type": "integer"}},
    },
    "Route": {
        "type": "object",
        "required": ["id", "targets", "default"],
        "properties": {
            "id": {"type": "string"},
            "targets": {"type": "array", "items": _TARGET},
            "default": {"type": "boolean", "description": "Derived from DECOPY_MODELS, not stored."},
            "version": {"type": "integer"},
        },
    },
    "RouteList": {
        "type": "object",
        "required": ["object", "version", "data"],
        "properties": {
            "object": {"const": "list"},
            "version": {"type": "integer"},
            "data": {"type": "array", "items": _ref("Route")},
        },
    },
    "RouteDeleted": {
        "type": "object",
        "required": ["id", "deleted", "version", "default"],
        "properties": {
            "id": {"type": "string"},
            "deleted": {"const": True},
            "version": {"type": "integer"},
            "default": {"anyOf": [_ref("Route"), {"type": "null"}], "description": "The default route back in force."},
        },
    },
}
