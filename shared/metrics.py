"""The gateway's Prometheus metrics (prometheus-client), one registry per role and process.

Every process (each uvicorn process of the API, each worker) counts into its own registry here;
:mod:`shared.telemetry` writes a snapshot of it to Redis every ``METRICS_INTERVAL`` seconds,
and the API renders ``/metrics``, ``/metrics/cluster`` and ``/admin/stats`` from those
snapshots (see docs/operations.md, "Metrics", for why).

Other modules call the small functions at the bottom (``rate_limit_rejected``,
``job_outcome``...) rather than touching the metric objects.
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.tools.reader import Counts

#: Kinds of upstream failure (``worker.upstream.base.UpstreamFailure.kind``), also the ``kind``
#: label of the upstream error metric.
UpstreamErrorKind = Literal["cloudflare", "rate_limited", "http", "protocol", "timeout", "connection"]
#: The same kinds as a tuple: always reported, zeros included.
UPSTREAM_ERROR_KINDS: tuple[UpstreamErrorKind, ...] = get_args(UpstreamErrorKind)

#: Time-to-first-token buckets in seconds (also used to estimate p50/p99 in ``/admin/stats``).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# --- API processes --------------------------------------------------------------------------

API_REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "decopy_requests",
    "HTTP requests answered, by route template, status, model and dialect (chat, responses, messages, "
    "completions; none for other routes).",
    ["route", "status", "model", "dialect"],
    registry=API_REGISTRY,
)
REQUEST_DURATION = Histogram(
    "decopy_request_duration_seconds",
    "Time from request to the last byte of the response (whole streams).",
    ["route"],
    buckets=DURATION_BUCKETS,
    registry=API_REGISTRY,
)
TTFT = Histogram(
    "decopy_time_to_first_token_seconds",
    "Time from request to the first piece of the answer.",
    ["model"],
    buckets=TTFT_BUCKETS,
    registry=API_REGISTRY,
)
QUEUE_WAIT = Histogram(
    "decopy_queue_wait_seconds",
    "Time a chat job waited in the queue before a worker took it.",
    ["model"],
    buckets=TTFT_BUCKETS,
    registry=API_REGISTRY,
)
STREAMS_IN_FLIGHT = Gauge(
    "decopy_streams_in_flight",
    "Server-sent event responses open now.",
    registry=API_REGISTRY,
)
RATE_LIMIT_REJECTIONS = Counter(
    "decopy_rate_limit_rejections",
    "Requests refused by a rate limit, by key id (never its name: /metrics needs no key).",
    ["key"],
    registry=API_REGISTRY,
)

UPSTREAM_SERVED = Counter(
    "decopy_upstream_answers",
    "Chat answers by the target (upstream/model) that served them.",
    ["upstream"],
    registry=API_REGISTRY,
)
BREAKER_STATE = Gauge(
    "decopy_upstream_breaker_state",
    "Circuit breaker of each route target: 0 closed, 1 half-open (one request tries it), 2 open.",
    ["target"],
    registry=API_REGISTRY,
    multiprocess_mode="max",
)

# --- worker processes -----------------------------------------------------------------------

WORKER_REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "decopy_jobs",
    "Chat jobs ended, by outcome (completed, failed, cancelled, dropped, abandoned, crashed, rerun_refused, "
    "upstream_busy, refused: an emulated tool call or JSON answer that could not be given, even after a "
    "correction).",
    ["outcome"],
    registry=WORKER_REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "decopy_upstream_errors",
    "Failed upstream calls (each attempt), by kind.",
    ["kind"],
    registry=WORKER_REGISTRY,
)
JOBS_RUNNING = Gauge(
    "decopy_jobs_running",
    "Chat jobs this worker process is running now.",
    registry=WORKER_REGISTRY,
)
TOOL_CALLS = Counter(
    "decopy_tool_calls",
    "Emulated tool calls, by model and outcome: emitted (sent to the client), repaired (sent after "
    "a repair, also counted in emitted), retried (a corrective retry was asked for), refused (not sent: "
    "not JSON, an unknown tool, arguments against the schema, or a required call missing).",
    ["model", "outcome"],
    registry=WORKER_REGISTRY,
)
JSON_ANSWERS = Counter(
    "decopy_json_answers",
    "Answers in a JSON output format, by model and outcome: valid (sent), repaired (sent after being "
    "dug out of a fence or text, or repaired; also counted in valid), retried, refused (an error sent).",
    ["model", "outcome"],
    registry=WORKER_REGISTRY,
)
for _kind in UPSTREAM_ERROR_KINDS:  # export zeros too, so a dashboard shows every kind from the start
    UPSTREAM_ERRORS.labels(kind=_kind)


def rate_limit_rejected(key_id: str) -> None:
    """Count one request refused by a rate limit (called by the limits code). The label is the key's
    id: ``/metrics`` answers without a key, and a key's name says whose it is."""
    RATE_LIMIT_REJECTIONS.labels(key=key_id).inc()


def job_outcome(outcome: str, kind: str | None) -> None:
    """``ChatRunner``'s ``on_outcome`` hook: a failed upstream attempt, or how a job ended."""
    if outcome == "upstream_error":
        UPSTREAM_ERRORS.labels(kind=kind or "http").inc()
    else:
        JOBS.labels(outcome=outcome).inc()


def emulation_counts(model: str, counts: Counts, retry: str | None) -> None:
    """``ChatRunner``'s ``on_emulation`` hook: what one attempt of a job with tools or JSON output did."""
    for outcome, n in (("emitted", counts.emitted), ("repaired", counts.repaired)):
        if n:
            TOOL_CALLS.labels(model=model, outcome=outcome).inc(n)
    if counts.refused:
        TOOL_CALLS.labels(model=model, outcome="refused").inc(counts.refused)
    for outcome, n in (("valid", counts.json_valid), ("repaired", counts.json_repaired)):
        if n:
            JSON_ANSWERS.labels(model=model, outcome=outcome).inc(n)
    if counts.json_refused:
        JSON_ANSWERS.labels(model=model, outcome="refused").inc(counts.json_refused)
    if retry == "json":
        JSON_ANSWERS.labels(model=model, outcome="retried").inc()
    elif retry is not None:
        TOOL_CALLS.labels(model=model, outcome="retried").inc()


def observe_request(
    *,
    route: str,
    status: int,
    model: str | None,
    duration: float,
    ttft: float | None,
    queue_wait: float | None,
    dialect: str | None = None,
    upstream: str | None = None,
) -> None:
    """Count one answered request (called once per request by the access-log middleware)."""
    label = model or "none"
    if upstream:
        UPSTREAM_SERVED.labels(upstream=upstream).inc()
    REQUESTS.labels(route=route, status=str(status), model=label, dialect=dialect or "none").inc()
    REQUEST_DURATION.labels(route=route).observe(duration)
    if ttft is not None:
        TTFT.labels(model=label).observe(ttft)
    if queue_wait is not None:
        QUEUE_WAIT.labels(model=label).observe(queue_wait)


# --- waiting per key ---------------------------------------------------------------------

KEY_QUEUE_WAIT = Histogram(
    "decopy_key_queue_wait_seconds",
    "Time a key's chat jobs waited in the queue before a worker took them, by key id (/metrics "
    "needs no key: a team's name is never a label).",
    ["key_id"],
    buckets=TTFT_BUCKETS,
    registry=API_REGISTRY,
)


def key_queue_wait(key_id: str, seconds: float) -> None:
    """Count how long one job of a key waited for a worker (called when its request ends)."""
    KEY_QUEUE_WAIT.labels(key_id=key_id).observe(seconds)


UPSTREAM_REPLACED = Counter(
    "decopy_upstream_replaced_chars",
    "Characters of upstream answers that could not be decoded and were replaced by U+FFFD.",
    registry=WORKER_REGISTRY,
)


def upstream_chars_replaced(count: int) -> None:
    """Count characters of an answer the upstream sent undecodable (the stream parser's hook)."""
    UPSTREAM_REPLACED.inc(count)


def breaker_states(states: dict[str, int]) -> None:
    """The breakers' states as last read from Redis (``shared.breaker.STATE_VALUE``)."""
    for target, value in states.items():
        BREAKER_STATE.labels(target=target).set(value)
