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


def job_channel(job_id: str) -> str:
    """The pub/sub channel on which a job's messages travel."""
    return f"{PREFIX}chan:{job_id}"


def job_run_key(job_id: str) -> str:
    """Set once by the worker that runs a job; says whether text went out (re-run guard)."""
    return f"{PREFIX}run:{job_id}"


def worker_health_key(worker_id: str) -> str:
    """arq's health-check key of one worker process."""
    return WORKER_HEALTH_PREFIX + worker_id


# --- [ops] metrics and cluster stats ---

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
