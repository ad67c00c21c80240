"""The gateway's Prometheus metrics (prometheus-client), one registry per role and process.

Every process (each uvicorn process of the API, each worker) counts into its own registry here;
:mod:`shared.telemetry` writes a snapshot of it to Redis every ``METRICS_INTERVAL`` seconds,
and the API renders ``/metrics``, ``/metrics/cluster`` and ``/admin/stats`` from those
snapshots (see the README's "Metrics" section for why).

Other modules call the small functions at the bottom (``rate_limit_rejected``,
``job_outcome``...) rather than touching the metric objects.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Upstream failure kinds (``worker.upstream.base.FailureKind``), always reported, zeros included.
UPSTREAM_ERROR_KINDS = ("cloudflare", "rate_limited", "http", "protocol", "timeout", "connection")

#: Time-to-first-token buckets in seconds (also used to estimate p50/p99 in ``/admin/stats``).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# --- API processes --------------------------------------------------------------------------

API_REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "decopy_requests",
    "HTTP requests answered, by route template, status and model.",
    ["route", "status", "model"],
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
    "Requests refused by a rate limit, by key name.",
    ["key"],
    registry=API_REGISTRY,
)

# --- worker processes -----------------------------------------------------------------------

WORKER_REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "decopy_jobs",
    "Chat jobs ended, by outcome (completed, failed, cancelled, dropped, duplicate_refused).",
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
for _kind in UPSTREAM_ERROR_KINDS:  # export zeros too, so a dashboard shows every kind from the start
    UPSTREAM_ERRORS.labels(kind=_kind)


def rate_limit_rejected(key_name: str) -> None:
    """Count one request refused by a rate limit (called by the limits code; ``key_name`` is never a secret)."""
    RATE_LIMIT_REJECTIONS.labels(key=key_name).inc()


def job_outcome(outcome: str, kind: str | None) -> None:
    """``ChatRunner``'s ``on_outcome`` hook: a failed upstream attempt, or how a job ended."""
    if outcome == "upstream_error":
        UPSTREAM_ERRORS.labels(kind=kind or "http").inc()
    else:
        JOBS.labels(outcome=outcome).inc()


def observe_request(
    *, route: str, status: int, model: str | None, duration: float, ttft: float | None, queue_wait: float | None
) -> None:
    """Count one answered request (called once per request by the access-log middleware)."""
    label = model or "none"
    REQUESTS.labels(route=route, status=str(status), model=label).inc()
    REQUEST_DURATION.labels(route=route).observe(duration)
    if ttft is not None:
        TTFT.labels(model=label).observe(ttft)
    if queue_wait is not None:
        QUEUE_WAIT.labels(model=label).observe(queue_wait)


# --- waiting per key ---------------------------------------------------------------------

KEY_QUEUE_WAIT = Histogram(
    "decopy_key_queue_wait_seconds",
    "Time a key's chat jobs waited in the queue before a worker took them, by key id and name.",
    ["key_id", "key"],
    buckets=TTFT_BUCKETS,
    registry=API_REGISTRY,
)


def key_queue_wait(key_id: str, key_name: str, seconds: float) -> None:
    """Count how long one job of a key waited for a worker (called when its request ends)."""
    KEY_QUEUE_WAIT.labels(key_id=key_id, key=key_name).observe(seconds)
