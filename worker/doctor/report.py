"""The doctor's report: one :class:`Step` per check, and the :class:`Report` of a whole run."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

from shared.settings import Settings
from worker.upstream.base import UpstreamFailure, trim

#: The doctor's prompt: fixed, tiny, and harmless for any model.
PROMPT = "Reply with one word: OK"
#: How long the last report stays in Redis.
REPORT_TTL = 30 * 24 * 3600

StepStatus = Literal["ok", "fail", "skip"]


@dataclasses.dataclass
class Step:
    """One line of the report."""

    step: str
    status: StepStatus
    verdict: str
    ms: float | None = None
    http_status: int | None = None
    body: str | None = None
    kind: str | None = None  # the upstream failure kind (shared with the error metrics)


@dataclasses.dataclass
class Report:
    """A whole doctor run; :meth:`to_json` is what ``--json`` prints and Redis keeps."""

    base_url: str
    proxies: list[str]
    models: dict[str, str]
    source: str
    host: str
    started: float
    steps: list[Step] = dataclasses.field(default_factory=list)
    finished: float | None = None

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.status == "fail"), None)

    @property
    def ok(self) -> bool:
        return self.failed is None and any(s.step == "stream" and s.status == "ok" for s in self.steps)

    def summary(self) -> str:
        failed = self.failed
        if failed is not None:
            answered = ""
            if failed.http_status is not None or failed.body:
                status = f"HTTP {failed.http_status}" if failed.http_status is not None else "no status"
                repeat = failed.body and failed.body[:40] not in failed.verdict
                answered = f" — upstream answered {status}" + (f": {trim(failed.body or '', 160)}" if repeat else "")
            return f"FAILED at {failed.step}: {failed.verdict}{answered}"
        if self.ok:
            return f"OK: an answer streamed end to end ({len(self.models)} model(s) checked)"
        return "INCOMPLETE: no answer streamed"

    def to_json(self) -> dict[str, Any]:
        failed = self.failed
        return {
            "ok": self.ok,
            "failed_step": failed.step if failed else None,
            "summary": self.summary(),
            "base_url": self.base_url,
            "proxies": self.proxies,
            "models": self.models,
            "source": self.source,
            "host": self.host,
            "started": self.started,
            "finished": self.finished,
            "took_ms": None if self.finished is None else round((self.finished - self.started) * 1000, 1),
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }


def reason(failure: UpstreamFailure, settings: Settings | None = None) -> str:
    """The failure's message without the call's name in front (the step already says it)."""
    message = failure.message
    for what in ("create-job: ", "get-job: "):
        if message.startswith(what):
            message = message[len(what) :]
    if failure.kind == "timeout" and settings is not None:
        message += (
            f" (no answer within UPSTREAM_CONNECT_TIMEOUT={settings.upstream_connect_timeout:g}s / "
            f"UPSTREAM_READ_TIMEOUT={settings.upstream_read_timeout:g}s)"
        )
    return message


def ms_since(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


class Stop(Exception):
    """A network step failed: the steps after it cannot run."""
