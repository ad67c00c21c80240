"""The upstream doctor against the simulator: every failure knob is named at the right step.

The doctor's prompt is fixed, so each test sets the simulator's default behaviour
(``POST /_sim/default``) instead of a per-prompt directive. Most tests run the doctor in this
process (the same code the CLI and the worker job call); a few run ``python -m worker doctor``
as a real process for its output, exit code and the report it keeps in Redis.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis

from devtools.procs import ROOT, Stack, free_port, wait_for
from shared import names
from shared.settings import Settings
from tests.proxy import Proxy
from worker.doctor import run_doctor

NETWORK_STEPS = ["resolve", "reach", "tls", "cloudflare", "create-job", "stream"]


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, str]]:
    stack = Stack()
    try:
        _, redis_url = stack.redis()
        _, sim_url = stack.simulator()
        yield sim_url, redis_url
    finally:
        stack.stop()


@pytest.fixture
def sim(stack: tuple[str, str]) -> Iterator[str]:
    sim_url = stack[0]
    httpx.post(sim_url + "/_sim/reset", timeout=5).raise_for_status()
    yield sim_url
    httpx.post(sim_url + "/_sim/reset", timeout=5).raise_for_status()


def set_default(sim_url: str, **fields: Any) -> None:
    httpx.post(sim_url + "/_sim/default", json=fields, timeout=5).raise_for_status()


def doctor(base_url: str, **env: str) -> dict[str, Any]:
    settings = Settings.from_env(
        {"DECOPY_BASE_URL": base_url, "UPSTREAM_READ_TIMEOUT": "1", "UPSTREAM_CONNECT_TIMEOUT": "2", **env}
    )
    return run_doctor(settings, source="test").to_json()


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in report["steps"]}


def statuses(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["step"], s["status"]) for s in report["steps"]]


def test_healthy_upstream_streams_end_to_end(sim: str) -> None:
    report = doctor(sim)
    assert report["ok"] is True and report["failed_step"] is None
    assert report["summary"].startswith("OK: an answer streamed end to end")
    model_steps = [f"model {m}" for m in Settings().decopy_models]
    assert [s["step"] for s in report["steps"]] == NETWORK_STEPS + model_steps
    by = steps(report)
    assert by["tls"]["status"] == "skip" and "http://" in by["tls"]["verdict"]
    assert all(by[name]["status"] == "ok" for name in NETWORK_STEPS if name != "tls")
    assert all(by[name]["status"] == "ok" for name in model_steps)
    assert "end marker seen" in by["stream"]["verdict"] and "Reply with one word: OK" in by["stream"]["verdict"]
    assert all(isinstance(by[n]["ms"], float) for n in ("resolve", "reach", "create-job", "stream"))
    # One create-job and one stream per model: the doctor reached every configured model.
    log = httpx.get(sim + "/_sim/log", timeout=5).json()
    assert sorted(e["model"] for e in log if e["kind"] == "create") == sorted(Settings().decopy_models.values())
    assert all(e["outcome"] == "ok" for e in log)


# (simulator default, the step that must fail, the failure kind, the HTTP status, words of the verdict)
KNOBS = [
    ({"create_fail": "cloudflare"}, "cloudflare", "cloudflare", 403, "cf-mitigated: challenge"),
    ({"create_fail": "cloudflare503"}, "cloudflare", "cloudflare", 503, "cloudscraper did not solve it"),
    ({"create_fail": "429"}, "create-job", "rate_limited", 429, "rate limited"),
    ({"create_fail": "500"}, "create-job", "http", 500, "HTTP 500"),
    ({"create_fail": "502"}, "create-job", "http", 502, "HTTP 502"),
    ({"create_fail": "code"}, "create-job", "protocol", 200, "code 100500: Service busy"),
    ({"create_fail": "html200"}, "create-job", "protocol", 200, "not JSON"),
    ({"create_fail": "nojobid"}, "create-job", "protocol", 200, "no result.job_id"),
    ({"create_fail": "drop"}, "create-job", "connection", None, "no answer: ConnectionError"),
    ({"create_fail": "hang", "hang_ms": 5000}, "create-job", "timeout", None, "UPSTREAM_READ_TIMEOUT=1s"),
    ({"stream_fail": "cloudflare"}, "stream", "cloudflare", 403, "Cloudflare challenge"),
    ({"stream_fail": "cloudflare503"}, "stream", "cloudflare", 503, "Cloudflare challenge"),
    ({"stream_fail": "429"}, "stream", "rate_limited", 429, "rate limited"),
    ({"stream_fail": "500"}, "stream", "http", 500, "HTTP 500"),
    ({"stream_fail": "502"}, "stream", "http", 502, "HTTP 502"),
    ({"stream_fail": "code"}, "stream", "protocol", 200, "expected an event stream, got application/json"),
    ({"stream_fail": "html200"}, "stream", "protocol", 200, "expected an event stream, got text/html"),
    ({"stream_fail": "drop"}, "stream", "connection", None, "before any text"),
    ({"stream_fail": "hang", "hang_ms": 5000}, "stream", "timeout", None, "before any text"),
    ({"stream_fail": "truncate"}, "stream", "protocol", 200, "without its end marker (truncated) (after 3 piece"),
    ({"stream_fail": "hang_after", "hang_ms": 5000}, "stream", "timeout", None, "after 3 piece(s)"),
    ({"stream_fail": "cut"}, "stream", "connection", None, "after 3 piece(s)"),
    ({"reply": []}, "stream", "protocol", 200, "carried no text"),
]


@pytest.mark.parametrize(
    ("knob", "step", "kind", "status", "words"), KNOBS, ids=[json.dumps(k[0], separators=(",", ":")) for k in KNOBS]
)
def test_each_failure_is_named_at_its_step(
    sim: str, knob: dict[str, Any], step: str, kind: str, status: int | None, words: str
) -> None:
    set_default(sim, **knob)
    report = doctor(sim)
    assert report["ok"] is False
    assert report["failed_step"] == step, report["summary"]
    failed = steps(report)[step]
    assert (failed["status"], failed["kind"], failed["http_status"]) == ("fail", kind, status)
    assert words in failed["verdict"]
    assert report["summary"].startswith(f"FAILED at {step}: ")
    # Every step before the failed one passed (tls: skipped for http), every step after it did not run.
    order = [s["step"] for s in report["steps"]]
    before, after = order[: order.index(step)], order[order.index(step) + 1 :]
    assert all(steps(report)[n]["status"] in ("ok", "skip") for n in before)
    assert [steps(report)[n]["status"] for n in after] == ["skip"] * len(after)
    assert all(steps(report)[n]["verdict"] == f"not run: {step} failed" for n in after)
    if status is not None and status != 200:
        assert failed["body"], "what the upstream answered is part of the verdict"


def test_malformed_lines_are_counted_not_fatal(sim: str) -> None:
    set_default(sim, malformed=True)
    report = doctor(sim)
    assert report["ok"] is True
    assert "unreadable line(s) skipped" in steps(report)["stream"]["verdict"]


def test_refused_header_is_named_at_create_job(sim: str) -> None:
    report = doctor(sim, DECOPY_PRODUCT_SERIAL="not-hex")
    assert report["failed_step"] == "create-job"
    assert "code 100400: product-serial header must be 32 hex digits" in steps(report)["create-job"]["verdict"]


def test_unknown_model_fails_its_own_step_and_the_others_still_run(sim: str) -> None:
    models = {"decopy-deepseek-v3": "DeepSeek-V3", "decopy-gone": "Gone-9", "decopy-gpt-4o-mini": "GPT-4o-mini"}
    report = doctor(sim, DECOPY_MODELS=json.dumps(models))
    assert report["ok"] is False and report["failed_step"] == "model decopy-gone"
    by = steps(report)
    assert by["stream"]["status"] == "ok"
    assert "code 100400: unsupported model 'Gone-9'" in by["model decopy-gone"]["verdict"]
    assert by["model decopy-gpt-4o-mini"]["status"] == "ok"


def test_unresolvable_host(sim: str) -> None:
    report = doctor("http://no-such-host.invalid")
    assert statuses(report)[0] == ("resolve", "fail")
    assert "cannot resolve 'no-such-host.invalid'" in report["summary"]
    assert [s for _, s in statuses(report)[1:]] == ["skip"] * (len(report["steps"]) - 1)


def test_unreachable_port(sim: str) -> None:
    port = free_port()
    report = doctor(f"http://127.0.0.1:{port}")
    assert statuses(report)[:2] == [("resolve", "ok"), ("reach", "fail")]
    assert f"cannot connect to 127.0.0.1:{port}" in steps(report)["reach"]["verdict"]
    assert "refused" in steps(report)["reach"]["verdict"].lower()


def test_unreachable_proxy_is_named_and_its_password_hidden(sim: str) -> None:
    port = free_port()
    report = doctor(sim, DECOPY_PROXY=f"http://ops:hunter2@127.0.0.1:{port}")
    assert report["failed_step"] == "reach"
    assert f"proxy http://ops:***@127.0.0.1:{port}" in steps(report)["reach"]["verdict"]
    assert "hunter2" not in json.dumps(report)
    assert steps(report)["resolve"]["status"] == "ok"


def test_tls_failure_is_named_at_tls(sim: str) -> None:
    # The simulator speaks plain HTTP: a TLS client hello to it cannot complete.
    report = doctor(sim.replace("http://", "https://"))
    assert statuses(report)[:3] == [("resolve", "ok"), ("reach", "ok"), ("tls", "fail")]
    assert "TLS handshake with 127.0.0.1 failed" in steps(report)["tls"]["verdict"]


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The simulator over https with a self-signed certificate for 127.0.0.1: (URL, certificate file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    stack = Stack()
    try:
        proc = stack.spawn(
            "sim-tls",
            [sys.executable, "-m", "tests.decopy_sim", "--port", "0", "--certfile", str(cert), "--keyfile", str(key)],
        )
        url: list[str] = []

        def ready() -> bool:
            url.extend(ln.split(" ", 1)[1] for ln in proc.log().splitlines() if ln.startswith("SIM_READY "))
            return bool(url)

        wait_for(ready, 15, "https simulator", proc.popen)
        yield url[0], str(cert)
    finally:
        stack.stop()


def test_tls_checked_against_the_trusted_certificates(
    tls_sim: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_sim
    assert url.startswith("https://127.0.0.1:")
    report = doctor(url)  # requests' trust store (certifi) does not know this self-signed certificate
    assert report["failed_step"] == "tls"
    assert "certificate of 127.0.0.1 not trusted (direct): self-signed certificate" in report["summary"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)  # what requests itself honours, so the doctor does too
    report = doctor(url)
    assert report["ok"] is True, report["summary"]
    assert re.match(
        r"TLSv1\.[23], certificate for 127\.0\.0\.1 by 127\.0\.0\.1, valid until .+ \(direct\)$",
        steps(report)["tls"]["verdict"],
    )


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """An HTTP + SOCKS5 proxy that alone knows the made-up host ``decopy.internal`` (127.0.0.1)."""
    p = Proxy("doctor", hosts={"decopy.internal": "127.0.0.1"}).start()
    yield p
    p.stop()


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_through_a_proxy_only_the_proxy_resolves_the_upstream(sim: str, proxy: Proxy, scheme: str) -> None:
    upstream = sim.replace("127.0.0.1", "decopy.internal")  # resolvable by the proxy only
    report = doctor(upstream, DECOPY_PROXY=proxy.url(scheme))
    assert report["ok"] is True, report["summary"]
    by = steps(report)
    assert by["resolve"]["verdict"] == "127.0.0.1 → 127.0.0.1; the proxy resolves the upstream's name"
    first_hop = "SOCKS proxy" if scheme.startswith("socks") else "proxy"
    assert f"TCP connection to {first_hop} 127.0.0.1:{proxy.port}" in by["reach"]["verdict"]
    assert f"via proxy {proxy.url(scheme)}" in by["create-job"]["verdict"]
    log = httpx.get(sim + "/_sim/log", timeout=5).json()
    assert {e["kind"] for e in log} == {"create", "stream"}  # every call reached the simulator, by that name
    if scheme == "http":  # the proxy stamps what it forwards: the simulator saw the doctor come through it
        assert proxy.http_requests >= 2 and all(e["headers"].get("x-via-proxy") == "doctor" for e in log)
    else:  # the calls share kept-alive connections through the tunnel: at least one was opened
        assert proxy.socks_connects >= 1


def test_https_upstream_through_a_connect_tunnel(
    tls_sim: tuple[str, str], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_sim
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    report = doctor(url, DECOPY_PROXY=proxy.url())
    assert report["ok"] is True, report["summary"]
    by = steps(report)
    tunnel = f"CONNECT tunnel to {url.removeprefix('https://')} through proxy 127.0.0.1:{proxy.port}"
    assert by["reach"]["verdict"] == tunnel
    assert "via proxy" in by["tls"]["verdict"] and by["tls"]["verdict"].startswith("TLSv1.")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "doctor", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "UPSTREAM_READ_TIMEOUT": "2", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_one_line_per_step_and_exits_0(stack: tuple[str, str], sim: str) -> None:
    _, redis_url = stack
    done = run_cli(env={"DECOPY_BASE_URL": sim, "REDIS_URL": redis_url})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"decopy doctor: {sim} (no proxy), 4 model(s)")
    assert [ln[7:].split()[0] for ln in lines[1:7]] == NETWORK_STEPS
    assert lines[1].startswith("[ ok ] resolve") and " ms " in lines[1]
    assert lines[3].startswith("[skip] tls")
    assert lines[-1].startswith("OK: an answer streamed end to end")
    kept = json.loads(cast(bytes | None, redis.Redis.from_url(redis_url).get(names.DOCTOR_LAST)) or b"null")
    assert kept["ok"] is True and kept["source"] == "cli"


def test_cli_json_names_the_failure_exits_1_and_is_kept_for_the_dashboard(stack: tuple[str, str], sim: str) -> None:
    _, redis_url = stack
    set_default(sim, create_fail="429")
    done = run_cli("--json", env={"DECOPY_BASE_URL": sim, "REDIS_URL": redis_url})
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["failed_step"] == "create-job"
    assert steps(report)["create-job"]["http_status"] == 429
    assert "Too many requests" in steps(report)["create-job"]["body"]
    assert json.loads(cast(bytes | None, redis.Redis.from_url(redis_url).get(names.DOCTOR_LAST)) or b"null") == report


def test_cli_without_redis_still_reports(sim: str) -> None:
    done = run_cli(env={"DECOPY_BASE_URL": sim, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert done.returncode == 0
    assert "not kept for the dashboard" in done.stderr
    assert done.stdout.splitlines()[-1].startswith("OK:")


def test_cli_bad_configuration_exits_2(sim: str) -> None:
    done = run_cli(env={"DECOPY_BASE_URL": "not a url"})
    assert done.returncode == 2 and "DECOPY_BASE_URL" in done.stderr
