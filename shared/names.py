"""Every Redis key, queue and channel name the gateway uses, in one place (like arq's constants)."""

from __future__ import annotations

PREFIX = "decopy:"

#: arq queue the chat jobs go into (a sorted set of job ids).
QUEUE = PREFIX + "queue"
#: Name of the arq job function that runs one chat.
CHAT_FUNCTION = "chat"
#: Channel every worker listens on; the API publishes here after enqueuing, so an idle
#: worker picks the job up at once instead of at its next poll.
WAKE_CHANNEL = PREFIX + "wake"
#: Channel the API hub always keeps subscribed (so its connection never idles unsubscribed).
HUB_CHANNEL = PREFIX + "hub"
#: Prefix of arq's per-worker health-check keys (one per worker process).
WORKER_HEALTH_PREFIX = PREFIX + "worker:"

# --- the doctor and the operator's dashboard ---
#: Name of the arq job function that runs the upstream doctor in a worker.
DOCTOR_FUNCTION = "doctor"
#: The last doctor report (JSON), written by the CLI or a worker, read by the dashboard.
DOCTOR_LAST = PREFIX + "doctor:last"
#: Set (with a TTL) while a doctor run asked for by the dashboard is queued or running.
DOCTOR_PENDING = PREFIX + "doctor:pending"


def job_channel(job_id: str) -> str:
    """The pub/sub channel on which a job's messages travel."""
    return f"{PREFIX}chan:{job_id}"


def job_run_key(job_id: str) -> str:
    """Set once by the worker that runs a job; says whether text went out (re-run guard)."""
    return f"{PREFIX}run:{job_id}"


def worker_health_key(worker_id: str) -> str:
    """arq's health-check key of one worker process."""
    return WORKER_HEALTH_PREFIX + worker_id


def dashboard_session_key(session_hash: str) -> str:
    """A dashboard login: keyed by the SHA-256 of the cookie's session id, never the id itself."""
    return f"{PREFIX}dashboard:session:{session_hash}"


# --- metrics and cluster stats ---


#: Sorted set per role ("api", "worker") of the processes that report metrics: member = process
#: id, score = unix time of its last snapshot. Readers find the snapshots through it (no SCAN).
def metrics_index(role: str) -> str:
    """The index of the processes of one role that publish metric snapshots."""
    return f"{PREFIX}metrics:procs:{role}"


def metrics_snapshot_key(process_id: str) -> str:
    """One process's latest metric snapshot (JSON, expires when the process stops reporting)."""
    return f"{PREFIX}metrics:proc:{process_id}"


#: Hash of cluster-wide running totals (each process adds its increments at every snapshot).
STATS_TOTALS = PREFIX + "stats:totals"
#: List of history points (newest first, capped at 15 minutes of 10-s points).
STATS_HISTORY = PREFIX + "stats:history"


def stats_slot_key(slot: int) -> str:
    """Taken with SET NX by the one process that writes the history point of 10-s slot ``slot``."""
    return f"{PREFIX}stats:slot:{slot}"


# --- team keys, per-key limits and the upstream budget ---

#: Set of the ids of every team key.
KEY_IDS = PREFIX + "keys"
#: Key that every upstream call of the worker pool adds itself to (sorted set, scored by time).
UPSTREAM_CALLS = PREFIX + "upstream:calls"
#: Leases of the upstream streams running now, pool-wide (sorted set of lease ids by expiry).
UPSTREAM_LEASES = PREFIX + "upstream:leases"


def key_by_hash(key_hash: str) -> str:
    """A team key's record (a hash), found by the SHA-256 of its secret; the secret is never stored."""
    return f"{PREFIX}keyhash:{key_hash}"


def key_by_id(key_id: str) -> str:
    """Index from a key's id to the SHA-256 under which its record lives (for listing and revoking)."""
    return f"{PREFIX}key:{key_id}"


def key_requests(key_id: str) -> str:
    """Sliding-window log of a key's requests (sorted set of request ids, scored by time in ms)."""
    return f"{PREFIX}rl:req:{key_id}"


def key_leases(key_id: str) -> str:
    """Concurrency leases of a key's requests in flight (sorted set of lease ids, scored by expiry in ms)."""
    return f"{PREFIX}rl:conc:{key_id}"


def key_usage_day(key_id: str, day: str) -> str:
    """A key's usage on one UTC day (``YYYY-MM-DD``): a hash of counters."""
    return f"{PREFIX}usage:{key_id}:{day}"


def key_usage_total(key_id: str) -> str:
    """A key's usage since it was created: a hash of counters."""
    return f"{PREFIX}usage:{key_id}:total"


# --- the request log and fair queuing ---

#: The request log: a capped stream, one entry (field ``e``, JSON) per chat request.
REQUEST_LOG = PREFIX + "requests"

# Fair queuing (shared.queue): start-time fair queuing over keys, decided in Redis.
#: Sorted set of the keys with jobs waiting, scored by the virtual start time of their head job.
FQ_KEYS = PREFIX + "fq:keys"
#: Prefix of each key's line of waiting job ids (a list, first come first served): + key id
#: ('' for jobs without a key, the doctor's: that line always goes first).
FQ_LINE_PREFIX = PREFIX + "fq:line:"
#: Where versions before the claim was made cheaper kept the queue's virtual time (now field ''
#: of FQ_FINISH): read only until the first job is taken after an upgrade.
FQ_CLOCK = PREFIX + "fq:clock"
#: Hash key id -> the virtual time at which the key's next job starts once it is active again;
#: field '' (no key has that id: the doctor's line has no fair share): the queue's virtual time,
#: the virtual start time of the keyed job taken last.
FQ_FINISH = PREFIX + "fq:finish"
#: Hash key id -> weight (1 when absent), set through the admin API.
FQ_WEIGHTS = PREFIX + "fq:weights"
#: Sorted set of "<key id> <job id>" taken by a worker, scored by when its in-progress key, as last
#: seen, runs out less in_progress ms (at first: when taken), looked at by full polls once due: a
#: job still queued without its in-progress key goes back to the front of its key's line.
FQ_TAKEN = PREFIX + "fq:taken"


def fq_line(key_id: str) -> str:
    """A key's line of waiting jobs in the fair queue."""
    return FQ_LINE_PREFIX + key_id


#: Failed master-key attempts from everyone in the current window (api.http.login_throttle).
LOGIN_FAILURES_ALL = PREFIX + "login:failures"


def login_failures(address: str) -> str:
    """Failed master-key attempts from one client address (or IPv6 /64) in the current window."""
    return PREFIX + "login:failures:" + address


def ready_probe(process_id: str) -> str:
    """The key each API process writes to check that Redis takes writes (``/readyz``)."""
    return PREFIX + "ready:" + process_id


# --- routing configuration and circuit breakers ---

#: The stored upstreams and routes (JSON with its version), see ``shared.liveconfig``.
CONFIG = PREFIX + "config"
#: The configuration's version alone: what every process polls to notice a change.
CONFIG_VERSION = PREFIX + "config:version"
#: Set of the targets (``upstream/model``) that have a breaker record.
BREAKERS = PREFIX + "breakers"


def breaker_key(target: str) -> str:
    """One target's circuit breaker (a hash: state, failures, opened_at, last failure)."""
    return f"{PREFIX}breaker:{target}"


# --- stored Responses API responses ---


def stored_response(response_id: str) -> str:
    """A stored Responses API response: its owner, the response, its input items and the
    conversation's turns (JSON, expires after ``RESPONSES_TTL_SECONDS``)."""
    return f"{PREFIX}response:{response_id}"
