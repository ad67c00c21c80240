"""[core] Errors in OpenAI's envelope, before and after a stream starts; auth."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import Gateway, assert_openai_error, directive


def test_malformed_json_is_400(gateway: Gateway) -> None:
    with gateway.http() as http:
        resp = http.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    err = assert_openai_error(resp, 400)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "decopy-deepseek-v3"}, "messages"),
        ({"model": "decopy-deepseek-v3", "messages": []}, "messages"),
        ({"model": "decopy-deepseek-v3", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "decopy-deepseek-v3", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, "stream"),
    ],
)
def test_bad_fields_are_400_naming_the_param(gateway: Gateway, body: dict[str, object], param: str) -> None:
    with gateway.http() as http:
        resp = http.post("/v1/chat/completions", json=body)
    err = assert_openai_error(resp, 400)
    assert err["param"] == param


def test_oversized_body_is_413(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"MAX_BODY_BYTES": "2000"}, workers=0)
    big = {"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": "x" * 5000}]}
    with gw.http() as http:
        resp = http.post("/v1/chat/completions", json=big)
    assert_openai_error(resp, 413)


def test_unknown_route_is_openai_404(gateway: Gateway) -> None:
    with gateway.http() as http:
        assert_openai_error(http.get("/v1/nothing-here"), 404)
        assert_openai_error(http.get("/v1/chat/completions"), 405)


def test_auth_with_master_key(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"API_MASTER_KEY": "sk-master-123"}, workers=1)
    for key in ("wrong", "sk-master-1234"):
        with pytest.raises(openai.AuthenticationError) as exc:
            gw.client(api_key=key).models.list()
        assert exc.value.status_code == 401
    with httpx.Client(base_url=gw.base_url) as http:
        err = assert_openai_error(http.get("/v1/models"), 401)
        assert err["type"] == "authentication_error"
        assert_openai_error(http.get("/v1/models", headers={"Authorization": "Basic abc"}), 401)
    good = gw.client(api_key="sk-master-123")
    assert len(good.models.list().data) == 8  # 4 ids + 4 upstream names
    resp = good.chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content


def test_upstream_failure_before_text_is_an_http_error(gateway: Gateway, tag: str) -> None:
    content = f"{tag} " + directive(create_fail="500")
    with pytest.raises(openai.InternalServerError) as exc:
        gateway.client().chat.completions.create(
            model="decopy-deepseek-v3", stream=True, messages=[{"role": "user", "content": content}]
        )
    assert exc.value.status_code == 502
    assert "HTTP 500" in exc.value.message
    # retried: 1 + UPSTREAM_RETRIES (3) attempts
    assert len([e for e in gateway.sim_entries(tag) if e["kind"] == "create"]) == 4


def test_truncated_upstream_stream_raises_in_sdk(gateway: Gateway, tag: str) -> None:
    content = f"{tag} " + directive(reply=["one ", "two ", "three ", "four"], stream_fail="truncate", truncate_after=2)
    stream = gateway.client().chat.completions.create(
        model="decopy-deepseek-v3", stream=True, messages=[{"role": "user", "content": content}]
    )
    seen = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "one two "
    assert "end marker" in str(exc.value)
    # after text went out, no retry
    assert len([e for e in gateway.sim_entries(tag) if e["kind"] == "stream"]) == 1


def test_truncated_upstream_whole_answer_is_error(gateway: Gateway, tag: str) -> None:
    content = f"{tag} " + directive(reply=["one ", "two ", "three"], stream_fail="truncate", truncate_after=1)
    with pytest.raises(openai.APIStatusError) as exc:
        gateway.client().chat.completions.create(
            model="decopy-deepseek-v3", messages=[{"role": "user", "content": content}]
        )
    assert exc.value.status_code == 502


def test_admin_needs_the_master_key(make_gateway: Callable[..., Gateway], gateway: Gateway) -> None:
    with gateway.http() as http:  # no master key configured: no admin at all
        err = assert_openai_error(http.get("/admin/anything"), 403)
        assert err["code"] == "admin_disabled"
    gw = make_gateway({"API_MASTER_KEY": "sk-master-xyz"}, workers=0)
    with httpx.Client(base_url=gw.base_url) as http:
        assert_openai_error(http.get("/admin/anything"), 401)
        assert_openai_error(http.get("/admin/anything", headers={"Authorization": "Bearer nope"}), 401)
        # the master key passes the guard and reaches routing (no such admin route yet: 404)
        assert_openai_error(http.get("/admin/anything", headers={"Authorization": "Bearer sk-master-xyz"}), 404)


def test_settings_repr_hides_secrets() -> None:
    from shared.settings import Settings

    settings = Settings.from_env({"API_MASTER_KEY": "sk-very-secret", "DECOPY_PROXY": "http://u:hunter2@proxy:3128"})
    assert settings.api_master_key == "sk-very-secret"
    text = repr(settings)
    assert "sk-very-secret" not in text and "hunter2" not in text
