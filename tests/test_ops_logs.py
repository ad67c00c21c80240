"""Logs: one JSON object per line, an access record per request, no prompts unless asked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Gateway, wait_until

MASTER = "sk-secret-logs-4242"


def _records(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)  # every line is one JSON object, or this raises
            assert isinstance(record, dict)
            out.append(record)
    return out


def _access(gw: Gateway, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for r in _records(gw.api_proc.log()):
            if r.get("logger") == "api.access" and r.get("request_id") == request_id:
                return r
        return None

    return wait_until(find, 10, f"the access record of {request_id}")  # type: ignore[no-any-return]


def _chat(gw: Gateway, text: str, request_id: str, stream: bool) -> httpx.Response:
    body = {"model": "decopy-gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}]}
    with gw.http() as http:
        return http.post("/v1/chat/completions", json=body, headers={"x-request-id": request_id})


def test_json_lines_access_records_and_no_prompts(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"API_MASTER_KEY": MASTER}, workers=1)
    gw.api_key = MASTER
    secret_prompt = f"my secret plan {tag}"
    resp = _chat(gw, secret_prompt, f"rid-{tag}-s", stream=True)
    assert resp.status_code == 200 and resp.headers["x-request-id"] == f"rid-{tag}-s"
    resp = _chat(gw, secret_prompt, f"rid-{tag}-w", stream=False)
    assert resp.status_code == 200
    answer = resp.json()["choices"][0]["message"]["content"]
    with httpx.Client(base_url=gw.base_url, timeout=10) as anon:  # no key: 401
        bad = anon.post("/v1/chat/completions", json={}, headers={"x-request-id": f"rid-{tag}-401"})
    assert bad.status_code == 401

    streamed = _access(gw, f"rid-{tag}-s")
    assert streamed["level"] == "INFO" and streamed["message"] == "POST /v1/chat/completions 200"
    assert streamed["time"].endswith("Z")
    assert streamed["status"] == 200 and streamed["stream"] is True
    assert streamed["model"] == "decopy-gpt-4o-mini" and streamed["key_name"] == "master"
    assert streamed["route"] == "/v1/chat/completions"
    for field in ("duration_ms", "queue_wait_ms", "ttft_ms"):
        assert isinstance(streamed[field], float) and streamed[field] >= 0, field
    assert streamed["ttft_ms"] <= streamed["duration_ms"]
    whole = _access(gw, f"rid-{tag}-w")
    assert whole["stream"] is False and isinstance(whole["ttft_ms"], float)
    rejected = _access(gw, f"rid-{tag}-401")
    assert rejected["status"] == 401 and rejected["error_code"] == "missing_api_key"
    assert rejected["key_name"] is None and rejected["route"] == "/v1/chat/completions"

    # the worker's lines about the job name the request too
    wait_until(
        lambda: any(r.get("request_id") == f"rid-{tag}-s" for r in _records(gw.workers[0].log())),
        10,
        "a worker line with the request id",
    )
    for proc in (gw.api_proc, gw.workers[0]):
        text = proc.log()
        _records(text)  # all JSON
        assert tag not in text.replace(f"rid-{tag}", ""), f"the prompt reached the {proc.name} log"
        assert answer not in text
        assert MASTER not in text


def test_log_prompts_true_logs_prompt_and_answer(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"LOG_PROMPTS": "true"}, workers=1)
    text = f"remember {tag}"
    resp = _chat(gw, text, f"rid-{tag}-s", stream=True)
    assert resp.status_code == 200
    streamed = _access(gw, f"rid-{tag}-s")
    assert streamed["prompt"] == [{"role": "user", "content": text}]
    assert streamed["answer"] == f"Hello! You said: {text}"
    resp = _chat(gw, text, f"rid-{tag}-w", stream=False)
    assert _access(gw, f"rid-{tag}-w")["answer"] == resp.json()["choices"][0]["message"]["content"]


def test_log_level_warning_hides_info(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"LOG_LEVEL": "WARNING"}, workers=1)
    assert _chat(gw, "quiet", f"rid-{tag}", stream=False).status_code == 200
    records = _records(gw.api_proc.log()) + _records(gw.workers[0].log())
    assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in records), records
