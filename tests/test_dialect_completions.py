"""Legacy completions end to end with the openai SDK (whole, streamed, stop and limit,
the refused fields), then what every door shares: CORS preflights and headers on ``/v1/*`` only,
and the ``dialect`` label of the request metrics and the access log."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CORS_ORIGIN, Gateway, directive, team_key, wait_until
from tests.ops_helpers import fresh_get, total

V3 = "decopy-deepseek-v3"


def test_sdk_completion_whole_and_streamed(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    whole = client.completions.create(model=V3, prompt=f"{tag} " + directive(reply=["Once ", "upon"]))
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert whole.choices[0].text == "Once upon" and whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == 3
    chunks = list(
        client.completions.create(
            model=V3,
            prompt=[f"{tag} " + directive(reply=["a ", "b ", "c"])],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "a b c"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage is not None
    cut = client.completions.create(
        model=V3, max_tokens=2, stop=["zzz"], prompt=f"{tag} " + directive(reply=["a long answer here"])
    )
    assert cut.choices[0].text == "a long a" and cut.choices[0].finish_reason == "length"
    stopped = client.completions.create(model=V3, stop="STOP", prompt=f"{tag} " + directive(reply=["keep STOP no"]))
    assert stopped.choices[0].text == "keep " and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("field", "value"),
    [("suffix", "tail"), ("echo", True), ("logprobs", 2), ("best_of", 3), ("n", 2), ("prompt", ["a", "b"])],
)
def test_refused_fields_are_named(dialects_gateway: Gateway, field: str, value: Any) -> None:
    body: dict[str, Any] = {"model": V3, "prompt": "hi", field: value}
    with pytest.raises(openai.BadRequestError) as refused:
        dialects_gateway.client().completions.create(**body)
    assert refused.value.param == field


def test_cors_preflight_and_headers_on_v1_only(dialects_gateway: Gateway, tag: str) -> None:
    preflight_headers = {
        "Origin": CORS_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os,anthropic-version,x-api-key",
    }
    with httpx.Client(base_url=dialects_gateway.base_url, timeout=10) as http:
        preflight = http.options("/v1/chat/completions", headers=preflight_headers)
        foreign = http.options("/v1/messages", headers={**preflight_headers, "Origin": "http://evil.test"})
        admin = http.options("/admin/keys", headers=preflight_headers)
        call = http.post(
            "/v1/chat/completions",
            json={"model": V3, "messages": [{"role": "user", "content": f"{tag} " + directive(reply=["hi"])}]},
            headers={"Origin": CORS_ORIGIN, "Authorization": f"Bearer {dialects_gateway.api_key}"},
        )
        denied = http.post("/v1/responses", json={}, headers={"Origin": CORS_ORIGIN})  # no key: 401, still readable
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "x-stainless-os" in preflight.headers["access-control-allow-headers"].lower()
    assert foreign.status_code == 400 and "access-control-allow-origin" not in foreign.headers
    assert "access-control-allow-origin" not in admin.headers
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == CORS_ORIGIN
    exposed = call.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed and "x-ratelimit-remaining-requests" in exposed
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == CORS_ORIGIN


def test_no_cors_without_the_setting(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        resp = http.options(
            "/v1/chat/completions", headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST"}
        )
    assert "access-control-allow-origin" not in resp.headers


def _access_record(gw: Gateway, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for line in gw.api_proc.log().splitlines():
            if request_id in line and '"api.access"' in line:
                return dict(json.loads(line))
        return None

    return wait_until(find, 10, f"the access record of {request_id}")  # type: ignore[no-any-return]


def test_metrics_and_access_log_carry_the_dialect(dialects_gateway: Gateway, tag: str) -> None:
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": tag}]}),
        "responses": ("/v1/responses", {"input": tag}),
        "messages": ("/v1/messages", {"max_tokens": 20, "messages": [{"role": "user", "content": tag}]}),
        "completions": ("/v1/completions", {"prompt": tag}),
    }
    before = fresh_get(dialects_gateway.base_url, "/metrics").text
    with dialects_gateway.http() as http:
        for dialect, (path, body) in calls.items():
            resp = http.post(path, json={"model": V3, **body}, headers={"x-request-id": f"{tag}-{dialect}"})
            assert resp.status_code == 200, resp.text
        refused = http.post("/v1/messages", json={"model": V3}, headers={"x-request-id": f"{tag}-bad"})
    assert refused.status_code == 400
    for dialect, (path, _) in calls.items():
        record = _access_record(dialects_gateway, f"{tag}-{dialect}")
        assert record["dialect"] == dialect and record["route"] == path and record["status"] == 200
    bad = _access_record(dialects_gateway, f"{tag}-bad")
    assert bad["dialect"] == "messages" and bad["error_code"] == "invalid_request_error"

    def counted() -> bool:
        now = fresh_get(dialects_gateway.base_url, "/metrics").text
        return all(
            total(now, "decopy_requests_total", route=path, dialect=dialect, status="200")
            > total(before, "decopy_requests_total", route=path, dialect=dialect, status="200")
            for dialect, (path, _) in calls.items()
        )

    wait_until(counted, 15, "every dialect counted in /metrics")


def test_same_limits_behind_every_door(dialects_gateway: Gateway, tag: str) -> None:
    """A team key's concurrency slot is taken by a chat in any dialect; its images go through the
    same SSRF guard."""
    _, secret = team_key(dialects_gateway, max_concurrent=1)
    slow = f"{tag} " + directive(reply=["slow ", "answer"], interval_ms=2000)
    auth = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=dialects_gateway.base_url, timeout=30, headers=auth) as http:
        with http.stream("POST", "/v1/responses", json={"model": V3, "stream": True, "input": slow}) as held:
            assert held.status_code == 200
            second = http.post(
                "/v1/messages",
                json={"model": V3, "max_tokens": 5, "messages": [{"role": "user", "content": tag}]},
                headers={"x-api-key": secret, "Authorization": ""},
            )
            held.read()
        private = http.post(
            "/v1/responses",
            json={
                "model": V3,
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": tag},
                            {"type": "input_image", "image_url": "http://127.0.0.1:9/secret.png"},
                        ],
                    }
                ],
            },
        )
    assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limit_error"
    assert second.headers["retry-after"]
    assert private.status_code == 400 and private.json()["error"]["param"] == "input[0].content[1].image_url"
