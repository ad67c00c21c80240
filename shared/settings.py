"""One typed settings object, built from the environment once in each entry point and passed down.

Every field maps to one environment variable (the upper-case field name unless ``env`` says
otherwise); docs/settings.md lists them all.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.tools.convention import DEFAULT_INSTRUCTION

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MODELS: dict[str, str] = {
    "decopy-deepseek-v3": "DeepSeek-V3",
    "decopy-deepseek-r1": "DeepSeek-R1",
    "decopy-gemini-2.0-flash": "Gemini-2.0-Flash",
    "decopy-gpt-4o-mini": "GPT-4o-mini",
}

#: What Anthropic's model names (``claude-*``) reach when MODEL_ALIASES is unset.
DEFAULT_CLAUDE_TARGET = "decopy-deepseek-v3"

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


def _models(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DECOPY_MODELS is not JSON: {exc}") from exc
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items())
    ):
        raise ConfigError('DECOPY_MODELS must be a JSON object {"openai-id": "UpstreamName", ...}')
    return dict(value)


def _aliases(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"MODEL_ALIASES is not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise ConfigError('MODEL_ALIASES must be a JSON object {"alias": "model-id", ...}')
    return dict(value)


PROXY_SCHEMES = frozenset({"http", "https", "socks4", "socks4a", "socks5", "socks5h"})


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs, messages and reports (proxy and
    Redis URLs carry credentials). Works on malformed URLs too (it is used while validating)."""
    return re.sub(r"://([^/@:]*):[^/@]*@", r"://\1:***@", url)


def proxy_urls(raw: str) -> list[str]:
    """The proxies listed in ``DECOPY_PROXY`` (comma-separated), each checked; ConfigError if malformed."""
    urls = [p.strip() for p in raw.split(",") if p.strip()]
    for url in urls:
        problem = None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
        except ValueError as exc:
            problem = str(exc)
        else:
            if parts.scheme.lower() not in PROXY_SCHEMES:
                problem = f"scheme must be one of {', '.join(sorted(PROXY_SCHEMES))}"
            elif not parts.hostname:
                problem = "no host"
            elif parts.path not in ("", "/") or parts.query or parts.fragment:
                problem = "a proxy URL has no path, query or fragment"
        if problem:
            shown = mask_url(url) if "://" in url else "<not a URL>"
            raise ConfigError(
                f"DECOPY_PROXY: {shown!r} is not a proxy URL ({problem}); "
                "expected e.g. http://host:3128 or socks5://user:pass@host:1080"
            )
    return urls


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The gateway's configuration. Build it with :meth:`from_env`; never mutate it."""

    # Redis / queue
    redis_url: str = "redis://127.0.0.1:6379/0"
    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8088
    api_master_key: str | None = field(default=None, repr=False)  # a secret: never in a repr or log
    max_body_bytes: int = 16 * 1024 * 1024
    image_max_bytes: int = 10 * 1024 * 1024
    image_fetch_timeout: float = 10.0
    log_level: str = "INFO"
    # Upstream
    decopy_base_url: str = "https://api.decopy.ai"
    decopy_product_code: str = "067003"
    decopy_product_serial: str = "eb0f5222701cbd6e67799c0cb99ec32b"
    decopy_user_agent: str = DEFAULT_USER_AGENT
    decopy_proxy: str = field(default="", repr=False)  # proxy URLs may carry passwords
    decopy_models: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 60.0
    upstream_retries: int = 3
    upstream_backoff_base: float = 0.5
    upstream_backoff_max: float = 8.0
    # Worker
    worker_concurrency: int = 32
    worker_poll_delay: float = 0.5
    worker_heartbeat: float = 5.0
    worker_drain_seconds: float = 60.0
    # Time limits seen by the client
    queue_timeout: float = 30.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 15.0
    total_timeout: float = 600.0
    ping_interval: float = 15.0
    max_queue: int = 1000

    # --- OpenAI compatibility: model names, reasoning, images ---
    #: JSON object {"alias": "model-id"}: more names a client may send for a model; an alias may
    #: be a glob pattern ({"claude-*": "decopy-deepseek-v3"}), and an exact name beats a pattern.
    #: By default Anthropic's model names reach decopy-deepseek-v3, so Claude Code works as is.
    model_aliases: dict[str, str] = field(default_factory=lambda: {"claude-*": DEFAULT_CLAUDE_TARGET})
    #: Split ``<think>…</think>`` off into ``reasoning_content`` (the DeepSeek API convention).
    reasoning_split: bool = True
    #: Comma-separated model ids whose answers may open with ``<think>…</think>``.
    reasoning_models: str = "decopy-deepseek-r1"
    #: Comma-separated CIDRs an image URL may point into although they are not public
    #: (the tests serve images from 127.0.0.2; empty in production).
    image_fetch_allow_networks: str = ""

    # --- Anthropic Messages, Responses and legacy completions dialects ---
    #: Seconds a stored Responses API response (``store``, on by default) is kept for
    #: ``GET /v1/responses/{id}`` and ``previous_response_id``.
    responses_ttl_seconds: float = 86400.0
    # CORS_ALLOW_ORIGINS (below, with the hardening settings) also turns on CORS for /v1/*.

    # --- shutdown and Redis timeouts ---
    #: On SIGTERM/SIGINT the API stops taking requests (503, /readyz says "draining") and lets the
    #: streams in flight finish for at most this long; what is still running then ends with an error.
    api_drain_seconds: float = 25.0
    #: Longest wait for Redis in the API's request path (connect and each command), so a Redis that
    #: is down or hung costs a client a quick 503 rather than a hang.
    redis_timeout: float = 2.0

    # --- access, per-key limits and the pool-wide upstream budget ---
    #: Serve ``/v1/*`` without any key on a non-loopback address (only with no API_MASTER_KEY).
    api_allow_open: bool = False
    #: Seconds a concurrency slot (a key's request in flight, or an upstream stream) outlives the
    #: process holding it if that process dies; live holders renew it every third of this.
    limit_lease_ttl: float = 30.0
    #: Upstream calls per minute for the whole worker pool (0 = unlimited).
    upstream_rpm: int = 0
    #: Upstream streams at once for the whole worker pool (0 = unlimited).
    upstream_max_concurrent: int = 0

    def _validate_limits(self) -> None:
        if self.limit_lease_ttl <= 0:
            raise ConfigError("LIMIT_LEASE_TTL must be greater than 0")
        for name in ("upstream_rpm", "upstream_max_concurrent"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.upper()} must be 0 (unlimited) or more")
        proxy_urls(self.decopy_proxy)  # raises ConfigError on a malformed URL

    # --- operations: processes, logs, metrics ---
    #: uvicorn processes per API container (>1: uvicorn's supervisor forks them from an import string).
    api_workers: int = 1
    #: Log the conversation and the answer in the access log (off: they are never logged).
    log_prompts: bool = False
    #: Seconds between two metric snapshots each process writes to Redis (cluster stats, /metrics).
    metrics_interval: float = 2.0

    # --- tool calling and JSON output, emulated (shared.tools; docs/tools.md) ---
    #: Emulate tools and JSON output through the prompt (off: ``tools`` and JSON formats get a 400).
    tools_emulation: bool = True
    #: The instruction folded in before the tool list (the ``<tool_call>`` markup itself is fixed).
    tools_instruction: str = DEFAULT_INSTRUCTION
    #: Longest prompt, in characters, once tools or an output format are folded in (over it: a 400).
    tools_prompt_max_chars: int = 200_000

    # --- several teams: the request log and Redis Sentinel ---
    #: Entries the request log keeps at most (the oldest go first; 0 turns the request log off).
    request_log_max_entries: int = 100_000
    #: Seconds a request-log entry is kept at most (0: only REQUEST_LOG_MAX_ENTRIES limits it).
    request_log_max_age: float = 7 * 86400.0
    #: Sentinels to ask for the Redis primary (``host:port``, comma-separated); empty: REDIS_URL's host.
    redis_sentinels: str = ""
    #: The name the sentinels know the gateway's Redis primary by.
    redis_sentinel_master: str = "mymaster"

    def _validate_teams(self) -> None:
        if self.request_log_max_entries < 0:
            raise ConfigError("REQUEST_LOG_MAX_ENTRIES must be 0 (off) or more")
        if self.request_log_max_age < 0:
            raise ConfigError("REQUEST_LOG_MAX_AGE must be 0 (no age limit) or more")
        from shared.redis_connect import sentinel_hosts  # here: that module needs this one

        sentinel_hosts(self.redis_sentinels)  # raises ConfigError on a malformed entry
        if self.redis_sentinels.strip() and not self.redis_sentinel_master.strip():
            raise ConfigError("REDIS_SENTINEL_MASTER must name the primary when REDIS_SENTINELS is set")

    # --- upstreams besides decopy, routes, breakers and decopy's transport (docs/upstreams.md) ---
    #: JSON object of the upstreams besides decopy; seeds the live configuration (docs/upstreams.md).
    upstreams: str = field(default="", repr=False)
    #: JSON object of the routes {"model-id": [{"upstream": ..., "model": ...}, ...]}; seeds it too.
    routes: str = ""
    #: Seconds between two checks of the live configuration's version in Redis.
    config_poll_interval: float = 0.5
    #: Consecutive failures of a target that open its circuit breaker (0: never open).
    breaker_failures: int = 5
    #: Seconds an open breaker skips its target before letting one request try it again.
    breaker_cooldown: float = 30.0
    #: How decopy is called: ``aiohttp`` or ``curl_cffi`` (a browser's TLS and HTTP/2 fingerprint).
    decopy_transport: str = "aiohttp"
    #: The browser curl_cffi impersonates (one of curl_cffi's names); the same browser as
    #: DECOPY_USER_AGENT (Chrome 131 by default), whose User-Agent the calls keep.
    decopy_impersonate: str = "chrome131"

    def _validate_upstreams(self) -> None:
        from shared.routing import seed_from_settings

        seed_from_settings(self.upstreams, self.routes, self.decopy_models)  # raises ConfigError
        if self.config_poll_interval <= 0 or self.config_poll_interval > 10:
            raise ConfigError("CONFIG_POLL_INTERVAL must be between 0 and 10 seconds")
        if self.breaker_failures < 0:
            raise ConfigError("BREAKER_FAILURES must be 0 (never open) or more")
        if self.breaker_cooldown <= 0:
            raise ConfigError("BREAKER_COOLDOWN must be greater than 0")
        if self.decopy_transport not in ("aiohttp", "curl_cffi"):
            raise ConfigError("DECOPY_TRANSPORT must be aiohttp or curl_cffi")

    # --- the operator's dashboard ---
    dashboard_session_ttl: float = 12 * 3600.0
    dashboard_refresh: float = 5.0

    # --- Defences against hostile clients and a strange upstream (docs/hardening.md) ---
    #: Seconds a client has, from connecting (or a keep-alive request's first byte), to send a
    #: request's headers; then 408 and the connection is closed. Idle sockets end this way too.
    api_header_timeout: float = 10.0
    #: Seconds a client has, after the headers, to send the whole body; then 408 and closed.
    api_body_timeout: float = 30.0
    #: Seconds an idle keep-alive connection stays open between two requests.
    api_keepalive_timeout: float = 5.0
    #: Connections per API process; a request arriving over this answers 503. Lowered at start
    #: to what the process's open-file limit allows (which start-up raises to the hard limit).
    api_max_connections: int = 2048
    #: Failed logins (dashboard form or master-key Bearer on /admin) one client address may make
    #: per LOGIN_WINDOW seconds before it gets 429 with Retry-After.
    login_max_failures: int = 10
    #: Failed logins from all addresses together per LOGIN_WINDOW seconds before every login
    #: attempt gets 429 (a distributed guess); counters live in Redis, shared by all replicas.
    login_max_failures_global: int = 200
    #: The window of the two login counters, in seconds.
    login_window: float = 300.0
    #: Origins a browser page may call the gateway from (comma-separated, or ``*``). Without a
    #: master key, a request whose ``Origin`` is not listed is refused (a foreign page must not
    #: spend an open gateway); the CORS middleware answers these origins.
    cors_allow_origins: tuple[str, ...] = ()
    #: Seconds after which a job whose worker is gone (no heartbeat) is cleared from the queue's
    #: in-progress count, e.g. after a Redis restart that kept its data; such a job never re-runs.
    orphan_job_seconds: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``env`` (``os.environ`` by default); unset means the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or (raw == "" and f.name != "api_master_key"):
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        if values.get("api_master_key") == "":
            values["api_master_key"] = None
        if "model_aliases" not in values and DEFAULT_CLAUDE_TARGET not in values.get("decopy_models", DEFAULT_MODELS):
            values["model_aliases"] = {}  # the default alias's model is not configured
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that would make the gateway misbehave rather than fail at start."""
        positive = (
            "api_port",
            "worker_concurrency",
            "max_body_bytes",
            "image_max_bytes",
            "image_fetch_timeout",
            "max_queue",
            "queue_timeout",
            "first_token_timeout",
            "idle_timeout",
            "total_timeout",
            "ping_interval",
            "worker_poll_delay",
            "worker_heartbeat",
            "upstream_connect_timeout",
            "upstream_read_timeout",
            "api_workers",
            "metrics_interval",
            "responses_ttl_seconds",
            "tools_prompt_max_chars",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be greater than 0")
        if self.upstream_retries < 0:
            raise ConfigError("UPSTREAM_RETRIES must be 0 or more")
        if self.worker_heartbeat >= self.idle_timeout:
            raise ConfigError("WORKER_HEARTBEAT must be shorter than IDLE_TIMEOUT")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        if self.metrics_interval > 10:
            raise ConfigError("METRICS_INTERVAL must be 10 s or less (the stats history has one point per 10 s)")
        if self.api_drain_seconds < 0:
            raise ConfigError("API_DRAIN_SECONDS must be 0 or more")
        if self.redis_timeout <= 0:
            raise ConfigError("REDIS_TIMEOUT must be greater than 0")
        self._validate_hardening()
        if "<tool_call>" not in self.tools_instruction:
            raise ConfigError("TOOLS_INSTRUCTION must show the call format, <tool_call>{...}</tool_call>")
        self._validate_compat()
        self._validate_limits()
        self._validate_operator()
        self._validate_teams()
        self._validate_upstreams()

    def _validate_hardening(self) -> None:
        for name in (
            "api_header_timeout",
            "api_body_timeout",
            "api_keepalive_timeout",
            "api_max_connections",
            "login_max_failures",
            "login_max_failures_global",
            "login_window",
            "orphan_job_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be greater than 0")
        for origin in self.cors_allow_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(
                    f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin (scheme://host[:port], no path) or *"
                )

    def _validate_operator(self) -> None:
        if self.dashboard_session_ttl < 60:
            raise ConfigError("DASHBOARD_SESSION_TTL must be at least 60 seconds")
        if not 0.5 <= self.dashboard_refresh <= 300:
            raise ConfigError("DASHBOARD_REFRESH must be between 0.5 and 300 seconds")

    def _validate_compat(self) -> None:
        lowered = {m.lower() for m in self.decopy_models}
        known = [*self.decopy_models, *_route_ids(self.routes)]  # a seeded route's id too
        for alias, target in self.model_aliases.items():
            if target not in known:
                raise ConfigError(
                    f"MODEL_ALIASES: {alias!r} points at {target!r}, which is not a model id "
                    f"of DECOPY_MODELS or ROUTES ({', '.join(known)})"
                )
            if alias.lower() in lowered:
                raise ConfigError(f"MODEL_ALIASES: {alias!r} is already a model id")
        # REASONING_MODELS is not checked against DECOPY_MODELS: its default must not break a
        # configuration that drops decopy-deepseek-r1; an id that matches nothing does nothing.
        _ = self.image_allow_networks  # raises ConfigError on a bad CIDR

    @property
    def reasoning_model_ids(self) -> frozenset[str]:
        """The models whose ``<think>`` part is split off (empty when ``REASONING_SPLIT`` is off)."""
        if not self.reasoning_split:
            return frozenset()
        return frozenset(m.strip() for m in self.reasoning_models.split(",") if m.strip())

    @property
    def image_allow_networks(self) -> tuple[IPNetwork, ...]:
        """``IMAGE_FETCH_ALLOW_NETWORKS`` parsed."""
        nets: list[IPNetwork] = []
        for raw in self.image_fetch_allow_networks.split(","):
            if raw.strip():
                try:
                    nets.append(ipaddress.ip_network(raw.strip(), strict=False))
                except ValueError as exc:
                    raise ConfigError(f"IMAGE_FETCH_ALLOW_NETWORKS: {exc}") from exc
        return tuple(nets)


def _route_ids(raw: str) -> list[str]:
    """The model ids ``ROUTES`` names (nothing if it does not parse: its own check says why)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return []
    return [k for k in value if isinstance(k, str)] if isinstance(value, dict) else []


def _convert(name: str, type_: Any, raw: str) -> Any:
    kind = str(type_)
    try:
        if name == "decopy_models":
            return _models(raw)
        if name == "model_aliases":
            return _aliases(raw)
        if name == "cors_allow_origins":
            return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return _bool(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name.upper()}={raw!r}: {exc}") from exc
