"""The upstream doctor: check the configured upstream step by step and say what broke.

``python -m worker doctor [--json]`` runs it where the worker runs (same settings, same proxy,
same cloudscraper sessions and client through :class:`worker.upstream.decopy.client.DecopyUpstream`), prints one
line per step with its timing and verdict, and exits 0 only when an answer streamed end to end.
The dashboard's "run again" button enqueues the same run as a worker job (:func:`doctor_job`),
so it too goes out the way real traffic does. Either way the last report is kept in Redis
(``shared.names.DOCTOR_LAST``) for the dashboard.

Steps, in order; the first failure stops the network steps (later ones are reported as not
run), while each model is checked even if another model failed:

- ``resolve``     the upstream's host name (or each proxy's, when ``DECOPY_PROXY`` is set: the
  proxy resolves the upstream then);
- ``reach``       a TCP connection to the upstream, or to each proxy and, for an https
  upstream, a ``CONNECT`` tunnel through it;
- ``tls``         the TLS handshake with the upstream host (certificate checked as requests
  checks it); skipped for an ``http://`` upstream such as the simulator;
- ``cloudflare``  the ``create-job`` call's answers: was a challenge served, and did
  cloudscraper get past it?
- ``create-job``  the same call judged as the protocol expects: HTTP 200, ``code`` 100000 and a
  job id (decopy answers another code when it dislikes a field or header);
- ``stream``      the job's event stream: events parsed, lines skipped, end marker seen;
- ``model <id>``  a tiny prompt to each configured model, through the worker's own code path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import dataclasses
import json
import logging
import os
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any, Literal, NoReturn, TypeVar

import certifi
import requests

from shared import names
from shared.errors import ConfigError
from shared.messages import ChatJob
from shared.settings import Settings, mask_url, proxy_urls
from worker.upstream.base import UpstreamFailure, trim
from worker.upstream.decopy.client import Answer, DecopyUpstream, classify_status, is_cloudflare
from worker.upstream.decopy.parser import StreamParser

log = logging.getLogger("worker.doctor")

#: The doctor's prompt: fixed, tiny, and harmless for any model.
PROMPT = "Reply with one word: OK"
#: How long the last report stays in Redis.
REPORT_TTL = 30 * 24 * 3600

StepStatus = Literal["ok", "fail", "skip"]
T = TypeVar("T")


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


def _reason(failure: UpstreamFailure, settings: Settings | None = None) -> str:
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


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


class _Stop(Exception):
    """A network step failed: the steps after it cannot run."""


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str, what: str) -> _Endpoint:
        parts = urllib.parse.urlsplit(url)
        if not parts.scheme or not parts.hostname:
            raise ConfigError(f"{what} {url!r} is not a URL")
        default = {"https": 443, "http": 80, "socks5": 1080, "socks5h": 1080, "socks4": 1080}.get(parts.scheme, 80)
        return cls(parts.scheme, parts.hostname, parts.port or default)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass
class _Route:
    """The way out: directly to the upstream, or through one proxy."""

    proxy_url: str | None
    proxy: _Endpoint | None
    sock: socket.socket | None = None

    @property
    def label(self) -> str:
        return f"via proxy {mask_url(self.proxy_url)}" if self.proxy_url else "direct"


class Doctor:
    """One doctor run against the upstream ``settings`` describe."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = "cli",
        host: str | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        self.settings = settings
        self.target = _Endpoint.parse(settings.decopy_base_url, "DECOPY_BASE_URL")
        proxies = proxy_urls(settings.decopy_proxy)
        self.routes = [_Route(p, _Endpoint.parse(p, "DECOPY_PROXY")) for p in proxies] or [_Route(None, None)]
        self.report = Report(
            base_url=settings.decopy_base_url,
            proxies=[mask_url(p) for p in proxies],
            models=dict(settings.decopy_models),
            source=source,
            host=host or socket.gethostname(),
            started=time.time(),
        )
        self._on_step = on_step or (lambda step: None)
        self._timeout = settings.upstream_connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None  # the upstream steps run on it

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Report:
        upstream = DecopyUpstream(self.settings)
        network_steps = ["resolve", "reach", "tls", "cloudflare", "create-job", "stream"]
        try:
            try:
                self._resolve()
                self._reach()
                self._tls()
                self._close_sockets()
                first_model = self._create_and_stream(upstream)
                self._models(upstream, first_model)
            except _Stop:
                done = {s.step for s in self.report.steps}
                failed = self.report.failed
                for name in network_steps + [f"model {m}" for m in self.settings.decopy_models]:
                    if name not in done:
                        self._add(Step(name, "skip", f"not run: {failed.step if failed else 'an earlier step'} failed"))
        finally:
            self._close_sockets()
            self._await(upstream.aclose())
            assert self._loop is not None
            self._loop.close()
            self._loop = None
            self.report.finished = time.time()
        return self.report

    def _add(self, step: Step) -> Step:
        self.report.steps.append(step)
        self._on_step(step)
        return step

    def _fail(self, step: Step) -> NoReturn:
        self._add(step)
        raise _Stop()

    # -- resolve, reach, tls ---------------------------------------------------------------

    def _getaddrinfo(self, endpoint: _Endpoint) -> list[str]:
        # getaddrinfo cannot be given a timeout: run it in a thread and stop waiting for it.
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            future = pool.submit(socket.getaddrinfo, endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            infos = future.result(timeout=self._timeout)
        finally:
            pool.shutdown(wait=False)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _resolve(self) -> None:
        started = time.monotonic()
        targets = [r.proxy for r in self.routes if r.proxy is not None] or [self.target]
        found: list[str] = []
        for endpoint in targets:
            try:
                addresses = self._getaddrinfo(endpoint)
            except concurrent.futures.TimeoutError:
                self._fail(
                    Step(
                        "resolve",
                        "fail",
                        f"cannot resolve {endpoint.host!r}: no answer within {self._timeout:g}s",
                        _ms(started),
                        kind="connection",
                    )
                )
            except OSError as exc:
                self._fail(
                    Step("resolve", "fail", f"cannot resolve {endpoint.host!r}: {exc}", _ms(started), kind="connection")
                )
            shown = ", ".join(addresses[:3]) + (f" (+{len(addresses) - 3})" if len(addresses) > 3 else "")
            found.append(f"{endpoint.host} → {shown}")
        note = "; the proxy resolves the upstream's name" if self.routes[0].proxy else ""
        self._add(Step("resolve", "ok", "; ".join(found) + note, _ms(started)))

    def _reach(self) -> None:
        started = time.monotonic()
        verdicts: list[str] = []
        for route in self.routes:
            first_hop = route.proxy or self.target
            try:
                sock = socket.create_connection((first_hop.host, first_hop.port), timeout=self._timeout)
            except OSError as exc:
                what = f"proxy {mask_url(route.proxy_url)}" if route.proxy_url else f"{self.target}"
                self._fail(
                    Step(
                        "reach",
                        "fail",
                        f"cannot connect to {what}: {exc}",
                        _ms(started),
                        kind="timeout" if isinstance(exc, TimeoutError) else "connection",
                    )
                )
            route.sock = sock
            if route.proxy is None:
                verdicts.append(f"TCP connection to {self.target} (direct)")
            elif route.proxy.scheme.startswith("socks"):
                verdicts.append(
                    f"TCP connection to SOCKS proxy {route.proxy} (the tunnel itself is tried by the create-job call)"
                )
            elif self.target.scheme == "https":
                self._connect_tunnel(route, started)
                verdicts.append(f"CONNECT tunnel to {self.target} through proxy {route.proxy}")
            else:
                verdicts.append(f"TCP connection to proxy {route.proxy} (an http:// upstream needs no tunnel)")
        self._add(Step("reach", "ok", "; ".join(verdicts), _ms(started)))

    def _connect_tunnel(self, route: _Route, started: float) -> None:
        assert route.sock is not None and route.proxy_url is not None
        parts = urllib.parse.urlsplit(route.proxy_url)
        lines = [f"CONNECT {self.target} HTTP/1.1", f"Host: {self.target}"]
        if parts.username is not None:
            creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(creds.encode()).decode())
        try:
            route.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = route.sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError as exc:
            self._fail(
                Step(
                    "reach",
                    "fail",
                    f"proxy {mask_url(route.proxy_url)} broke the CONNECT: {exc}",
                    _ms(started),
                    kind="connection",
                )
            )
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        code = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        if code != 200:
            self._fail(
                Step(
                    "reach",
                    "fail",
                    f"proxy {mask_url(route.proxy_url)} refused the tunnel to "
                    f"{self.target}: {status_line or 'no answer'}",
                    _ms(started),
                    http_status=code,
                    body=trim(head.decode("latin-1")),
                    kind="connection",
                )
            )

    def _tls(self) -> None:
        if self.target.scheme != "https":
            self._add(Step("tls", "skip", f"{self.target.scheme}:// upstream: no TLS to check"))
            return
        started = time.monotonic()
        # The trust store requests uses (REQUESTS_CA_BUNDLE, else certifi's bundle).
        cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        context = ssl.create_default_context(cafile=cafile)
        verdicts: list[str] = []
        for route in self.routes:
            if route.proxy is not None and route.proxy.scheme.startswith("socks"):
                verdicts.append(f"{route.label}: checked by the create-job call")
                continue
            assert route.sock is not None
            try:
                tls = context.wrap_socket(route.sock, server_hostname=self.target.host)
            except ssl.SSLCertVerificationError as exc:
                self._fail(
                    Step(
                        "tls",
                        "fail",
                        f"certificate of {self.target.host} not trusted ({route.label}): {exc.verify_message}",
                        _ms(started),
                        kind="connection",
                    )
                )
            except (ssl.SSLError, OSError) as exc:
                self._fail(
                    Step(
                        "tls",
                        "fail",
                        f"TLS handshake with {self.target.host} failed ({route.label}): {exc}",
                        _ms(started),
                        kind="connection",
                    )
                )
            route.sock = tls
            cert = tls.getpeercert() or {}
            # issuer: a tuple of RDNs, each a tuple of (name, value) pairs (ssl.getpeercert's shape)
            names_ = {str(pair[0]): str(pair[1]) for rdn in cert.get("issuer", ()) for pair in rdn}
            issuer = names_.get("organizationName") or names_.get("commonName") or "?"
            verdicts.append(
                f"{tls.version()}, certificate for {self.target.host} by {issuer}, valid until "
                f"{cert.get('notAfter', '?')} ({route.label})"
            )
        self._add(Step("tls", "ok", "; ".join(verdicts), _ms(started)))

    def _close_sockets(self) -> None:
        for route in self.routes:
            if route.sock is not None:
                route.sock.close()
                route.sock = None

    # -- the protocol ----------------------------------------------------------------------

    def _job(self, model_id: str, upstream_model: str) -> ChatJob:
        return ChatJob(request_id="doctor", model=model_id, upstream_model=upstream_model, prompt=PROMPT, image=None)

    def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one step of the worker's own (asyncio) upstream code on the doctor's event loop."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def _create_and_stream(self, upstream: DecopyUpstream) -> str:
        model_id, upstream_model = next(iter(self.settings.decopy_models.items()))
        job = self._job(model_id, upstream_model)
        session = upstream.pool.acquire()
        seen: list[tuple[int, bool, str]] = []  # every answer, including cloudscraper's own retries

        def record(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
            answer = Answer.of(resp.status_code, resp.headers, b"" if kwargs.get("stream") else resp.content)
            seen.append((resp.status_code, is_cloudflare(answer), answer.text))

        broken = True
        try:
            started = time.monotonic()
            try:
                form = upstream.form(job)
                answer = self._await(upstream.post_create_job(session, form))
                seen.append((answer.status, is_cloudflare(answer), answer.text))
                if upstream.solvable_challenge(session, answer):  # the worker hands it to cloudscraper
                    session.hooks["response"].append(record)
                    try:
                        answer = self._await(upstream.solve_create_job(session, form))
                    finally:
                        session.hooks["response"].remove(record)
            except UpstreamFailure as failure:
                if failure.kind == "cloudflare":  # cloudscraper saw a challenge and gave up on it
                    self._fail(
                        Step(
                            "cloudflare",
                            "fail",
                            "challenge not solved by cloudscraper: " + _reason(failure, self.settings),
                            _ms(started),
                            kind="cloudflare",
                        )
                    )
                self._add(Step("cloudflare", "skip", "no HTTP answer to look at"))
                self._fail(
                    Step(
                        "create-job",
                        "fail",
                        f"no answer: {_reason(failure, self.settings)}",
                        _ms(started),
                        kind=failure.kind,
                    )
                )
            took = _ms(started)
            self._cloudflare_verdict(answer, seen, took)
            try:
                job_id = upstream.parse_create_job(answer)
            except UpstreamFailure as failure:
                self._fail(
                    Step(
                        "create-job",
                        "fail",
                        _reason(failure, self.settings),
                        took,
                        http_status=answer.status,
                        body=failure.body or trim(answer.text),
                        kind=failure.kind,
                    )
                )
            proxy = session.proxies.get("https") or session.proxies.get("http")
            via = f"; via proxy {mask_url(proxy)}" if proxy else ""
            self._add(
                Step(
                    "create-job",
                    "ok",
                    f"HTTP 200, code 100000, job id {job_id[:16]}… (model "
                    f"{upstream_model}; fields and headers accepted{via})",
                    took,
                    http_status=200,
                )
            )
            self._stream(upstream, session, job_id)
            broken = False
        finally:
            upstream.pool.release(session, broken=broken)
        return model_id

    def _cloudflare_verdict(self, answer: Answer, seen: list[tuple[int, bool, str]], took: float) -> None:
        challenges = [status for status, challenged, _ in seen if challenged]
        final = classify_status(answer, "create-job") if answer.status != 200 or challenges else None
        if final is not None and final.kind == "cloudflare":
            self._fail(
                Step(
                    "cloudflare",
                    "fail",
                    f"challenge served on create-job (HTTP {answer.status}"
                    f"{', cf-mitigated: challenge' if answer.headers.get('cf-mitigated') else ''}); "
                    "cloudscraper did not solve it",
                    took,
                    http_status=answer.status,
                    body=final.body,
                    kind="cloudflare",
                )
            )
        if challenges:
            self._add(
                Step(
                    "cloudflare",
                    "ok",
                    f"challenge seen (HTTP {challenges[0]}) and solved by cloudscraper",
                    took,
                    http_status=answer.status,
                )
            )
        else:
            self._add(
                Step(
                    "cloudflare",
                    "ok",
                    f"no challenge (create-job answered HTTP {answer.status})",
                    took,
                    http_status=answer.status,
                )
            )

    def _stream(self, upstream: DecopyUpstream, session: requests.Session, job_id: str) -> None:
        started = time.monotonic()
        parser = StreamParser()
        pieces: list[str] = []
        first: list[float] = []

        async def read() -> None:
            async for batch in upstream.read_job(session, job_id, parser=parser):
                if not first:
                    first.append(_ms(started))
                pieces.extend(batch)

        try:
            self._await(read())
        except UpstreamFailure as failure:
            where = f"after {len(pieces)} piece(s) of text" if pieces else "before any text"
            self._fail(
                Step(
                    "stream",
                    "fail",
                    f"{_reason(failure, self.settings)} ({where})",
                    _ms(started),
                    http_status=failure.status,
                    body=failure.body,
                    kind=failure.kind,
                )
            )
        text = "".join(pieces)
        if not text.strip():
            self._fail(
                Step(
                    "stream",
                    "fail",
                    "the stream ended properly but carried no text",
                    _ms(started),
                    http_status=200,
                    kind="protocol",
                )
            )
        skipped = f", {parser.skipped} unreadable line(s) skipped" if parser.skipped else ""
        self._add(
            Step(
                "stream",
                "ok",
                f"{len(pieces)} event(s) parsed{skipped}, end marker seen; first text after "
                f"{first[0]:.0f} ms: {trim(text, 60)!r}",
                _ms(started),
                http_status=200,
            )
        )

    def _models(self, upstream: DecopyUpstream, checked: str) -> None:
        for model_id, upstream_model in self.settings.decopy_models.items():
            name = f"model {model_id}"
            if model_id == checked:
                self._add(Step(name, "ok", f"{upstream_model}: answered in the create-job and stream steps"))
                continue
            started = time.monotonic()
            pieces: list[str] = []

            async def read(job: ChatJob) -> None:
                async for batch in upstream.stream(job):
                    pieces.extend(batch)

            try:
                self._await(read(self._job(model_id, upstream_model)))
            except UpstreamFailure as failure:
                self._add(
                    Step(
                        name,
                        "fail",
                        f"{upstream_model}: {_reason(failure, self.settings)}",
                        _ms(started),
                        http_status=failure.status,
                        body=failure.body,
                        kind=failure.kind,
                    )
                )
                continue
            if not "".join(pieces).strip():
                self._add(
                    Step(name, "fail", f"{upstream_model}: the answer carried no text", _ms(started), kind="protocol")
                )
                continue
            self._add(Step(name, "ok", f"{upstream_model}: {len(pieces)} event(s), end marker seen", _ms(started)))


# -- output, Redis, entry points -----------------------------------------------------------


def format_step(step: Step) -> str:
    """One line: status, step, timing, verdict (and what the upstream answered, when it failed)."""
    mark = {"ok": "[ ok ]", "fail": "[FAIL]", "skip": "[skip]"}[step.status]
    took = f"{step.ms:>8.0f} ms" if step.ms is not None else " " * 11
    line = f"{mark} {step.step:<32} {took}  {step.verdict}"
    if step.status == "fail" and step.body:
        line += f"\n{'':>46}upstream answered{f' HTTP {step.http_status}' if step.http_status else ''}: {step.body}"
    return line


def run_doctor(
    settings: Settings, *, source: str = "cli", host: str | None = None, on_step: Callable[[Step], None] | None = None
) -> Report:
    """Run every step once and return the report (never raises for an upstream failure)."""
    return Doctor(settings, source=source, host=host, on_step=on_step).run()


def record(settings: Settings, report: dict[str, Any]) -> None:
    """Keep ``report`` as the last doctor run in Redis (synchronous; the CLI's way)."""
    from shared.redis_connect import sync_redis

    client = sync_redis(settings, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.set(names.DOCTOR_LAST, json.dumps(report), ex=REPORT_TTL)
    finally:
        client.close()


async def doctor_job(ctx: dict[str, Any]) -> bool:
    """arq job (``shared.names.DOCTOR_FUNCTION``): the dashboard's "run again", run by a worker."""
    runner = ctx["runner"]
    settings: Settings = runner.settings
    redis = runner.redis
    try:
        report = await asyncio.to_thread(run_doctor, settings, source="dashboard", host=runner.worker_id)
        data = report.to_json()
        await redis.set(names.DOCTOR_LAST, json.dumps(data), ex=REPORT_TTL)
        log.info("doctor: %s", data["summary"])
        return bool(data["ok"])
    finally:
        await redis.delete(names.DOCTOR_PENDING)


def main(argv: list[str]) -> int:
    """``python -m worker doctor [--json]``: 0 when an answer streamed end to end, 1 if not, 2 bad config."""
    parser = argparse.ArgumentParser(
        prog="python -m worker doctor", description="Check the configured upstream step by step."
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (one object)")
    parser.add_argument("--no-record", action="store_true", help="do not keep the report in Redis")
    args = parser.parse_args(argv)
    on_step = None if args.json else (lambda step: print(format_step(step), flush=True))
    try:
        settings = Settings.from_env()
        doctor = Doctor(settings, source="cli", on_step=on_step)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # Upstream warnings (skipped lines) are counted in the report; keep stdout to the report.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if not args.json:
        print(
            f"decopy doctor: {settings.decopy_base_url} "
            f"({', '.join(doctor.report.proxies) or 'no proxy'}), {len(settings.decopy_models)} model(s)"
        )
    report = doctor.run().to_json()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(report["summary"])
    if not args.no_record:
        try:
            record(settings, report)
        except Exception as exc:  # Redis is optional for the CLI: the report is printed anyway
            print(
                f"(not kept for the dashboard: Redis at {mask_url(settings.redis_url)} unreachable: {exc})",
                file=sys.stderr,
            )
    return 0 if report["ok"] else 1
