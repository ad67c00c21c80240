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

# --- [operator] names below this line ---
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
