"""Fast unit tests of the pure pieces of upstreams and routes: configuration parsing and checks,
the OpenAI-compatible request body, tool calls assembled from fragments."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import ConfigError
from shared.messages import ChatJob
from shared.routing import (
    RouteConfigError,
    Stored,
    Target,
    check,
    combine,
    parse_routes,
    parse_upstream,
    seed_from_settings,
)
from shared.settings import DEFAULT_MODELS, Settings
from worker.upstream.openai_compat import _Calls, build_body

OK_UPSTREAM = {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1/", "api_key_env": "LLM_KEY"}


def test_defaults_are_one_route_per_decopy_model() -> None:
    config = combine(Stored(), version=0, decopy_base_url="https://api.decopy.ai", decopy_models=DEFAULT_MODELS)
    assert set(config.routes) == set(DEFAULT_MODELS)
    route = config.routes["decopy-deepseek-v3"]
    assert route.default and route.targets == (Target("decopy", "DeepSeek-V3"),)
    assert config.upstreams["decopy"].builtin


def test_a_stored_route_replaces_a_default_one() -> None:
    stored = Stored(routes=parse_routes({"decopy-deepseek-v3": [{"upstream": "decopy", "model": "GPT-4o-mini"}]}))
    config = combine(stored, version=3, decopy_base_url="http://x", decopy_models=DEFAULT_MODELS)
    assert config.routes["decopy-deepseek-v3"].targets[0].model == "GPT-4o-mini"
    assert not config.routes["decopy-deepseek-v3"].default and config.version == 3


def test_an_upstream_is_parsed_and_shown_without_secrets() -> None:
    up = parse_upstream("local", {**OK_UPSTREAM, "headers": {"X-Team": "blue"}, "native_tools": True})
    assert up.base_url == "http://127.0.0.1:8000/v1"  # the trailing slash goes
    assert up.public() == {
        "name": "local",
        "kind": "openai",
        "base_url": "http://127.0.0.1:8000/v1",
        "api_key_env": "LLM_KEY",
        "api_key_header": None,
        "headers": {"X-Team": "blue"},
        "native_tools": True,
        "builtin": False,
    }


@pytest.mark.parametrize(
    "body, param",
    [
        ({**OK_UPSTREAM, "kind": "grpc"}, "kind"),
        ({**OK_UPSTREAM, "base_url": "ftp://x"}, "base_url"),
        ({**OK_UPSTREAM, "base_url": "http://user:pw@host/v1"}, "base_url"),
        ({**OK_UPSTREAM, "api_key_env": "sk-live-123"}, "api_key_env"),
        ({**OK_UPSTREAM, "headers": {"Authorization": "Bearer x"}}, "headers"),
        ({**OK_UPSTREAM, "headers": {"X-A": 1}}, "headers"),
        ({**OK_UPSTREAM, "headers": {"X-Api-Key": "sk-123"}}, "headers"),  # a secret in clear: refused
        ({**OK_UPSTREAM, "headers": {"X-Auth-Token": "t"}}, "headers"),
        ({"kind": "openai", "base_url": "http://x", "api_key_header": "api-key"}, "api_key_header"),
        ({**OK_UPSTREAM, "api_key_header": "bad header"}, "api_key_header"),
        ({**OK_UPSTREAM, "native_tools": "yes"}, "native_tools"),
        ({**OK_UPSTREAM, "api_key": "sk-1"}, "api_key"),
        ({"kind": "decopy", "base_url": "http://x", "native_tools": True}, "native_tools"),
    ],
)
def test_bad_upstreams_are_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RouteConfigError) as exc:
        parse_upstream("u", body)
    assert exc.value.param == param


def test_the_builtin_upstream_cannot_be_redefined() -> None:
    with pytest.raises(RouteConfigError):
        parse_upstream("decopy", OK_UPSTREAM)


@pytest.mark.parametrize(
    "routes",
    [
        {"r": []},
        {"r": [{"upstream": "decopy"}]},
        {"r": [{"upstream": "decopy", "model": "A"}, {"upstream": "decopy", "model": "A"}]},
        {"bad id!": [{"upstream": "decopy", "model": "A"}]},
        {"r": [{"upstream": "decopy", "model": "A", "weight": 2}]},
    ],
)
def test_bad_routes_are_refused(routes: dict[str, Any]) -> None:
    with pytest.raises(RouteConfigError):
        parse_routes(routes)


def test_a_route_id_may_look_like_an_openai_model_id() -> None:
    assert "org/llama-3:8b" in parse_routes({"org/llama-3:8b": [{"upstream": "decopy", "model": "A"}]})


def test_a_route_pointing_nowhere_is_refused() -> None:
    stored = Stored(routes=parse_routes({"r": [{"upstream": "nowhere", "model": "A"}]}))
    with pytest.raises(RouteConfigError, match="nowhere"):
        check(stored, DEFAULT_MODELS)


def test_settings_refuse_a_bad_seed_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="ROUTES is not JSON"):
        Settings.from_env({"ROUTES": "{nope"})
    with pytest.raises(ConfigError, match="UPSTREAMS/ROUTES"):
        Settings.from_env({"ROUTES": json.dumps({"r": [{"upstream": "ghost", "model": "m"}]})})
    with pytest.raises(ConfigError, match="DECOPY_TRANSPORT"):
        Settings.from_env({"DECOPY_TRANSPORT": "urllib"})
    seeded = seed_from_settings(
        json.dumps({"local": OK_UPSTREAM}), json.dumps({"r": [{"upstream": "local", "model": "m"}]}), DEFAULT_MODELS
    )
    assert set(seeded.upstreams) == {"local"} and set(seeded.routes) == {"r"}
    assert Stored.from_json(json.loads(json.dumps(seeded.to_json()))) == seeded  # what Redis keeps reads back


def _job(**extra: Any) -> ChatJob:
    job: Any = {"request_id": "r", "model": "m", "upstream_model": "qwen", "prompt": "User: hi", "image": None}
    job.update(extra)
    return job  # type: ignore[no-any-return]


TOOLS = [{"name": "f", "description": "d", "parameters": {"type": "object"}}]
TURNS = [{"role": "system", "text": "S"}, {"role": "user", "text": "hi", "name": "al"}]


def test_body_without_turns_sends_the_prompt_as_one_user_message() -> None:
    body = build_body(_job(), native=True)
    assert body == {"model": "qwen", "messages": [{"role": "user", "content": "User: hi"}], "stream": True}


def test_body_with_native_tools_sends_turns_and_tools() -> None:
    body = build_body(_job(turns=TURNS, tools=TOOLS, tool_choice={"name": "f"}, parallel_tool_calls=False), native=True)
    assert body["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi", "name": "al"}]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False


def test_body_without_native_tools_sends_the_folded_prompt_and_no_tools() -> None:
    body = build_body(_job(turns=TURNS, tools=TOOLS, tool_choice="auto"), native=False)
    assert body["messages"] == [{"role": "user", "content": "User: hi"}] and "tools" not in body


def test_body_carries_tool_results_and_json_output() -> None:
    turns = [
        {"role": "user", "text": "weather?"},
        {"role": "assistant", "text": "", "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}]},
        {"role": "tool", "text": "sunny", "tool_call_id": "c1"},
    ]
    output = {"type": "json_object", "name": None, "schema": None, "strict": False}
    body = build_body(_job(turns=turns, tools=TOOLS, output=output), native=True)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert body["response_format"] == {"type": "json_object"}


def test_an_image_goes_as_a_data_url_part() -> None:
    image = {"data": b"\x89PNG", "content_type": "image/png", "extension": "png"}
    body = build_body(_job(image=image), native=False)
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "User: hi"}
    assert parts[1]["image_url"]["url"] == "data:image/png;base64,iVBORw=="


def test_tool_calls_are_assembled_from_fragments_in_index_order() -> None:
    calls = _Calls()
    calls.feed([{"index": 1, "id": "b", "function": {"name": "g", "arguments": ""}}])
    calls.feed([{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}])
    calls.feed([{"index": 0, "function": {"arguments": ": 1}"}}, {"index": 1, "function": {"arguments": "{}"}}])
    assert calls.drain() == [
        {"id": "a", "name": "f", "arguments": '{"x": 1}'},
        {"id": "b", "name": "g", "arguments": "{}"},
    ]
    assert calls.drain() == []


def test_the_key_is_read_from_its_variable_into_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.upstream.openai_compat import OpenAIUpstream

    monkeypatch.setenv("LLM_KEY", "sk-from-env")
    bearer = OpenAIUpstream(parse_upstream("a", OK_UPSTREAM), Settings())._headers()
    assert bearer["Authorization"] == "Bearer sk-from-env"
    azure = OpenAIUpstream(parse_upstream("b", {**OK_UPSTREAM, "api_key_header": "api-key"}), Settings())._headers()
    assert azure["api-key"] == "sk-from-env" and "Authorization" not in azure
    monkeypatch.delenv("LLM_KEY")
    assert "Authorization" not in OpenAIUpstream(parse_upstream("c", OK_UPSTREAM), Settings())._headers()


def test_an_alias_may_name_a_seeded_route() -> None:
    routes = json.dumps({"team-chat": [{"upstream": "decopy", "model": "DeepSeek-V3"}]})
    settings = Settings.from_env({"ROUTES": routes, "MODEL_ALIASES": json.dumps({"chat": "team-chat"})})
    assert settings.model_aliases == {"chat": "team-chat"}
    with pytest.raises(ConfigError, match="DECOPY_MODELS or ROUTES"):
        Settings.from_env({"MODEL_ALIASES": json.dumps({"chat": "team-chat"})})
