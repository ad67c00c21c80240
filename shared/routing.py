"""Upstreams and routes: what a model id a client sends is served by, and in which order.

A *route* is a model id (what ``/v1/models`` lists) with an ordered list of *targets*, each an
upstream and the model name that upstream knows. An *upstream* is decopy (the built-in one,
configured by the ``DECOPY_*`` settings, or another decopy-speaking base URL) or any
OpenAI-compatible chat-completions endpoint.

Pure data and validation, shared by the API (which names routes), the workers (which follow
them) and the admin API (which changes them). The live copy is kept in Redis
(:mod:`shared.liveconfig`). The default routes, one per ``DECOPY_MODELS`` entry to the built-in
``decopy`` upstream, are not stored: they are derived from the settings, and a stored route of
the same id replaces one. A deployment that configures nothing therefore behaves as before.

Secrets never enter this configuration: an upstream names the *environment variable* holding
its API key (``api_key_env``); the worker reads that variable when it calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.errors import ConfigError

UpstreamKind = Literal["decopy", "openai"]
KINDS: tuple[UpstreamKind, ...] = ("decopy", "openai")
#: The upstream the ``DECOPY_*`` settings describe; always present, not editable.
BUILTIN = "decopy"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
#: A route id is a model id: OpenAI-style ids may carry ``/`` and ``:`` (``org/model:tag``).
_ROUTE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
#: Headers an upstream's ``headers`` may not set (the gateway sets them, or they carry secrets).
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "content-length", "host", "cookie"})
#: Header names that carry secrets: refused in ``headers`` (stored in Redis, shown by the admin
#: API); such a key goes through ``api_key_env`` and ``api_key_header`` instead.
_SECRET_HEADER = re.compile(r"key|token|secret|auth|password|session", re.I)


class RouteConfigError(ValueError):
    """A configuration that cannot be accepted; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream. ``base_url``: for ``openai``, the URL before ``/chat/completions``; for
    ``decopy``, the API's base (the built-in one takes ``DECOPY_BASE_URL``)."""

    name: str
    kind: UpstreamKind
    base_url: str = ""
    api_key_env: str | None = None
    #: The header the key goes in: ``Authorization`` (as ``Bearer <key>``) unless another is named
    #: (e.g. ``api-key`` for Azure OpenAI, ``x-api-key``), which then carries the key alone.
    api_key_header: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: The endpoint takes tools and ``response_format`` itself (no emulation in the prompt).
    native_tools: bool = False
    builtin: bool = False

    def public(self) -> dict[str, Any]:
        """What the admin API returns and Redis keeps (names of secrets only, never their values)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "api_key_header": self.api_key_header,
            "headers": dict(self.headers),
            "native_tools": self.native_tools,
            "builtin": self.builtin,
        }


@dataclass(frozen=True)
class Target:
    upstream: str
    model: str

    @property
    def label(self) -> str:
        """How the target is named in headers, logs, metrics and the breaker: ``upstream/model``."""
        return f"{self.upstream}/{self.model}"

    def public(self) -> dict[str, str]:
        return {"upstream": self.upstream, "model": self.model}


@dataclass(frozen=True)
class Route:
    id: str
    targets: tuple[Target, ...]
    #: Derived from ``DECOPY_MODELS`` (not stored; a stored route of the same id replaces it).
    default: bool = False

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "targets": [t.public() for t in self.targets], "default": self.default}


@dataclass(frozen=True)
class RoutingConfig:
    """The whole live configuration: stored upstreams and routes, the defaults folded in."""

    version: int
    upstreams: dict[str, UpstreamConfig]
    routes: dict[str, Route]

    def route(self, model_id: str) -> Route | None:
        return self.routes.get(model_id)

    def labels(self) -> list[str]:
        """Every target of every route, once, in route order."""
        return list(dict.fromkeys(t.label for r in self.routes.values() for t in r.targets))


def _str(value: Any, param: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise RouteConfigError(f"'{param}' must be a non-empty string.", param)
    return value.strip()


def parse_name(value: Any, param: str) -> str:
    name = _str(value, param)
    if not _NAME.match(name):
        raise RouteConfigError(
            f"'{param}' must be 1-64 characters: letters, digits, '.', '_' or '-' (got {name!r:.80}).", param
        )
    return name


def parse_route_id(value: Any, param: str = "id") -> str:
    rid = _str(value, param)
    if not _ROUTE_ID.match(rid):
        raise RouteConfigError(
            f"'{param}' must be 1-128 characters: letters, digits, '.', '_', '-', ':' or '/' (got {rid!r:.80}).", param
        )
    return rid


def _url(value: Any, param: str) -> str:
    url = _str(value, param).rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise RouteConfigError(f"'{param}' is not a URL: {exc}", param) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RouteConfigError(f"'{param}' must be an http(s) URL (got {url!r:.120}).", param)
    if parts.username or parts.password:
        raise RouteConfigError(f"'{param}' may not carry credentials: name them in 'api_key_env'.", param)
    return url


def parse_upstream(name: str, body: Any) -> UpstreamConfig:
    """One upstream from its JSON object (the admin API's body or a ``UPSTREAMS`` entry)."""
    if not isinstance(body, dict):
        raise RouteConfigError("An upstream is a JSON object.", None)
    known = {"name", "kind", "base_url", "api_key_env", "api_key_header", "headers", "native_tools"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise RouteConfigError(f"Unknown upstream field '{unknown[0]}'.", unknown[0])
    if name == BUILTIN:
        raise RouteConfigError(f"'{BUILTIN}' is the built-in upstream (set by DECOPY_* settings).", "name")
    kind = body.get("kind")
    if kind not in KINDS:
        raise RouteConfigError(f"'kind' must be one of {', '.join(KINDS)}.", "kind")
    base_url = _url(body.get("base_url"), "base_url")
    key_env = body.get("api_key_env")
    if key_env is not None:
        key_env = _str(key_env, "api_key_env")
        if not _ENV_NAME.match(key_env):
            raise RouteConfigError(
                "'api_key_env' is the NAME of an environment variable holding the key "
                "(letters, digits and '_'), never the key itself.",
                "api_key_env",
            )
        if kind == "decopy":
            raise RouteConfigError("A decopy upstream takes no API key.", "api_key_env")
    headers = body.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise RouteConfigError("'headers' must be an object of header names to string values.", "headers")
    for hname in headers:
        if not _HEADER_NAME.match(hname) or hname.lower() in _RESERVED_HEADERS or _SECRET_HEADER.search(hname):
            raise RouteConfigError(
                f"'headers' may not set {hname!r:.60} (not a header name, or one the gateway sets; "
                "an API key goes through 'api_key_env' and 'api_key_header').",
                "headers",
            )
    key_header = body.get("api_key_header")
    if key_header is not None:
        key_header = _str(key_header, "api_key_header")
        if not _HEADER_NAME.match(key_header) or key_header.lower() in _RESERVED_HEADERS - {"authorization"}:
            raise RouteConfigError("'api_key_header' must be a header name such as 'api-key'.", "api_key_header")
        if key_env is None:
            raise RouteConfigError(
                "'api_key_header' names where the key of 'api_key_env' goes: set both.", "api_key_header"
            )
    native = body.get("native_tools", False)
    if not isinstance(native, bool):
        raise RouteConfigError("'native_tools' must be true or false.", "native_tools")
    if native and kind == "decopy":
        raise RouteConfigError("decopy has no native tools.", "native_tools")
    return UpstreamConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key_env=key_env,
        api_key_header=key_header,
        headers=dict(headers),
        native_tools=native,
    )


def parse_targets(value: Any, param: str = "targets") -> tuple[Target, ...]:
    if not isinstance(value, list) or not value:
        raise RouteConfigError(f"'{param}' must be a non-empty list of {{upstream, model}} objects.", param)
    if len(value) > 8:
        raise RouteConfigError(f"'{param}' lists at most 8 targets.", param)
    targets: list[Target] = []
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(item, dict) or set(item) - {"upstream", "model"}:
            raise RouteConfigError(f"'{where}' must be an object with 'upstream' and 'model'.", where)
        target = Target(
            parse_name(item.get("upstream"), where + ".upstream"), _str(item.get("model"), where + ".model")
        )
        if target in targets:
            raise RouteConfigError(f"'{where}' repeats a target.", where)
        targets.append(target)
    return tuple(targets)


def builtin_upstream(decopy_base_url: str) -> UpstreamConfig:
    return UpstreamConfig(name=BUILTIN, kind="decopy", base_url=decopy_base_url.rstrip("/"), builtin=True)


def default_routes(decopy_models: Mapping[str, str]) -> dict[str, Route]:
    return {mid: Route(mid, (Target(BUILTIN, upstream),), default=True) for mid, upstream in decopy_models.items()}


@dataclass(frozen=True)
class Stored:
    """What Redis keeps: the upstreams and routes the operator added (never the defaults)."""

    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "upstreams": {
                n: {k: v for k, v in u.public().items() if k not in ("name", "builtin")}
                for n, u in self.upstreams.items()
            },
            "routes": {r.id: [t.public() for t in r.targets] for r in self.routes.values()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Stored:
        if not isinstance(data, dict):
            raise RouteConfigError("The stored configuration is not a JSON object.")
        return cls(
            upstreams=parse_upstreams(data.get("upstreams") or {}), routes=parse_routes(data.get("routes") or {})
        )


def parse_upstreams(value: Any) -> dict[str, UpstreamConfig]:
    """``UPSTREAMS``: ``{"name": {"kind": …, "base_url": …, …}, …}``."""
    if not isinstance(value, dict):
        raise RouteConfigError('UPSTREAMS must be a JSON object {"name": {"kind": "openai", ...}}.')
    return {parse_name(n, "name"): parse_upstream(n, body) for n, body in value.items()}


def parse_routes(value: Any) -> dict[str, Route]:
    """``ROUTES``: ``{"model-id": [{"upstream": …, "model": …}, …], …}``."""
    if not isinstance(value, dict):
        raise RouteConfigError('ROUTES must be a JSON object {"model-id": [{"upstream": ..., "model": ...}]}.')
    return {parse_route_id(rid): Route(rid, parse_targets(t, f"routes.{rid}")) for rid, t in value.items()}


def combine(stored: Stored, *, version: int, decopy_base_url: str, decopy_models: Mapping[str, str]) -> RoutingConfig:
    """The configuration in force: the built-in upstream and default routes, then what is stored."""
    upstreams = {BUILTIN: builtin_upstream(decopy_base_url), **stored.upstreams}
    routes = {**default_routes(decopy_models), **stored.routes}
    return RoutingConfig(version=version, upstreams=upstreams, routes=routes)


def check(stored: Stored, decopy_models: Mapping[str, str]) -> None:
    """Refuse a configuration with a route pointing nowhere (a target on an unknown upstream)."""
    known = {BUILTIN, *stored.upstreams}
    for route in stored.routes.values():
        for i, target in enumerate(route.targets):
            if target.upstream not in known:
                raise RouteConfigError(
                    f"Route '{route.id}' target {i} names upstream '{target.upstream}', which does not exist "
                    f"(upstreams: {', '.join(sorted(known))}).",
                    "targets",
                )
    lowered = {m.lower(): m for m in decopy_models}
    for rid in stored.routes:
        if rid.lower() in lowered and rid not in decopy_models:
            raise RouteConfigError(
                f"Route '{rid}' differs from the default route '{lowered[rid.lower()]}' only by case.", "id"
            )


def seed(upstreams_json: Any, routes_json: Any, decopy_models: Mapping[str, str]) -> Stored:
    """The first stored configuration, from the ``UPSTREAMS`` and ``ROUTES`` settings (parsed JSON)."""
    stored = Stored(parse_upstreams(upstreams_json or {}), parse_routes(routes_json or {}))
    check(stored, decopy_models)
    return stored


def seed_from_settings(upstreams_raw: str, routes_raw: str, decopy_models: Mapping[str, str]) -> Stored:
    """:func:`seed` from the raw settings; a ConfigError names the setting at fault."""
    import json

    values = []
    for setting, raw in (("UPSTREAMS", upstreams_raw), ("ROUTES", routes_raw)):
        try:
            values.append(json.loads(raw) if raw.strip() else {})
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{setting} is not JSON: {exc}") from exc
    try:
        return seed(values[0], values[1], decopy_models)
    except RouteConfigError as exc:
        raise ConfigError(f"UPSTREAMS/ROUTES: {exc.message}") from exc
