"""OpenAI parameters through the official SDK: usage in streams, stop, max_tokens, refused
and ignored fields, reasoning, model names, headers. Real Redis, API, workers; decopy simulated."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from shared.tokens import estimate_tokens
from tests.conftest import COMPAT_ALIASES, Gateway, directive, wait_until

V3 = "decopy-deepseek-v3"
R1 = "decopy-deepseek-r1"


def _stream(client: openai.OpenAI, **kw: Any) -> dict[str, Any]:
    """Run a streamed completion; collect content, reasoning, finish reason, usage chunks."""
    out: dict[str, Any] = {"content": "", "reasoning": "", "finish": None, "usage": [], "chunks": 0}
    for chunk in client.chat.completions.create(stream=True, **kw):
        out["chunks"] += 1
        if chunk.usage is not None:
            out["usage"].append((chunk.usage, list(chunk.choices)))
        for choice in chunk.choices:
            out["content"] += choice.delta.content or ""
            out["reasoning"] += getattr(choice.delta, "reasoning_content", None) or ""
            out["finish"] = choice.finish_reason or out["finish"]
    return out


def _upstream_stream(gw: Gateway, tag: str) -> dict[str, Any]:
    (entry,) = [e for e in gw.sim_entries(tag) if e["kind"] == "stream"]
    return entry


def _wait_upstream_closed(gw: Gateway, tag: str) -> dict[str, Any]:
    """The simulator's record of the job's stream once it has ended (the gateway hung up)."""
    entry: dict[str, Any] = wait_until(
        lambda: next((e for e in gw.sim_entries(tag) if e["kind"] == "stream" and e["ended"]), None),
        15,
        "upstream stream closed",
    )
    return entry


# --- 1. usage in streams -----------------------------------------------------------------


def test_include_usage_sends_a_last_usage_chunk(gateway: Gateway, tag: str) -> None:
    prompt = f"{tag} " + directive(reply=["Hello ", "wörld ", "中文"])
    got = _stream(
        gateway.client(),
        model=V3,
        messages=[{"role": "user", "content": prompt}],
        stream_options={"include_usage": True},
    )
    assert got["content"] == "Hello wörld 中文" and got["finish"] == "stop"
    ((usage, choices),) = got["usage"]
    assert choices == []
    assert usage.prompt_tokens == estimate_tokens(prompt)
    assert usage.completion_tokens == estimate_tokens("Hello wörld 中文")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_usage_chunk_is_last_before_done_over_raw_sse(gateway: Gateway, tag: str) -> None:
    body = {
        "model": V3,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"{tag} " + directive(reply=["a", "b"])}],
    }
    with gateway.http() as http:
        events = [
            ln[6:] for ln in http.post("/v1/chat/completions", json=body).text.split("\n") if ln.startswith("data: ")
        ]
    assert events[-1] == "[DONE]"
    last, before = json.loads(events[-2]), json.loads(events[-3])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 1
    assert before["choices"][0]["finish_reason"] == "stop" and "usage" not in before


def test_no_usage_chunk_without_include_usage(gateway: Gateway, tag: str) -> None:
    for options in (None, {"include_usage": False}):
        kw: dict[str, Any] = {"stream_options": options} if options else {}
        got = _stream(gateway.client(), model=V3, messages=[{"role": "user", "content": f"{tag} hi"}], **kw)
        assert got["usage"] == [] and got["content"]


# --- 2. stop and max_tokens, emulated by the gateway ---------------------------------------

SLOW_TAIL = [f" filler{i}" for i in range(60)]  # 60 more pieces, 250 ms apart: 15 s if never cut


def test_stop_split_across_deltas_streamed_then_upstream_closed(gateway: Gateway, tag: str) -> None:
    reply = ["The answer is 4", "2.\n\nUs", "er: thanks", *SLOW_TAIL]
    got = _stream(
        gateway.client(),
        model=V3,
        stop=["\n\nUser:", "never"],
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=reply, interval_ms=250)}],
    )
    assert got["content"] == "The answer is 42." and got["finish"] == "stop"
    assert got["usage"][0][0].completion_tokens == estimate_tokens("The answer is 42.")
    entry = _wait_upstream_closed(gateway, tag)
    assert entry["client_closed"] is True and entry["outcome"] == "client_closed"
    assert entry["pieces_sent"] < len(reply) // 2  # the rest was never read


def test_stop_in_whole_answer_then_upstream_closed(gateway: Gateway, tag: str) -> None:
    reply = ["alpha be", "ta gam", "ma", *SLOW_TAIL]
    resp = gateway.client().chat.completions.create(
        model=V3,
        stop="beta",
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=reply, interval_ms=250)}],
    )
    assert resp.choices[0].message.content == "alpha " and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == estimate_tokens("alpha ")
    entry = _wait_upstream_closed(gateway, tag)
    assert entry["client_closed"] is True and entry["pieces_sent"] < len(reply) // 2


def test_stop_not_met_ends_normally(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3,
        stop=["zzz", "yy"],
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=["y", "x", "y"])}],
    )
    assert resp.choices[0].message.content == "yxy" and resp.choices[0].finish_reason == "stop"
    assert _upstream_stream(gateway, tag)["outcome"] == "ok"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_ends_with_length_and_closes_upstream(gateway: Gateway, tag: str, field: str) -> None:
    reply = ["abcd" * 3, "efgh" * 3, *SLOW_TAIL]  # 3 then 3 more estimated tokens
    got = _stream(
        gateway.client(),
        model=V3,
        stream_options={"include_usage": True},
        **{field: 5},
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=reply, interval_ms=250)}],
    )
    assert got["content"] == "abcd" * 3 + "efgh" * 2 and got["finish"] == "length"
    assert got["usage"][0][0].completion_tokens == 5
    entry = _wait_upstream_closed(gateway, tag)
    assert entry["client_closed"] is True and entry["pieces_sent"] < len(reply) // 2


def test_token_limit_in_whole_answer(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3, max_tokens=2, messages=[{"role": "user", "content": f"{tag} " + directive(reply=["中文回答"])}]
    )
    assert resp.choices[0].message.content == "中文" and resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 2


# --- 2. refused: what the upstream cannot do ------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
# tools, tool_choice and response_format are emulated (tests/test_tools.py); the legacy
# functions / function_call are still refused.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"n": 2}, "n"),
    ({"functions": [TOOL["function"]]}, "functions"),
    ({"function_call": {"name": "get_weather"}}, "function_call"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
]


@pytest.mark.parametrize("fields, param", REFUSED, ids=[p for _, p in REFUSED])
def test_unsupported_parameters_are_400_naming_the_field(
    gateway: Gateway, tag: str, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gateway.client().chat.completions.create(
            model=V3, messages=[{"role": "user", "content": tag}], extra_body=fields
        )
    assert exc.value.status_code == 400
    assert exc.value.body["param"] == param  # type: ignore[index]
    assert exc.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    assert "not supported" in exc.value.message and "upstream" in exc.value.message
    assert gateway.sim_entries(tag) == []  # nothing reached decopy


def test_ignored_parameters_are_accepted_and_change_nothing(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3,
        messages=[{"role": "user", "content": tag}],
        temperature=0.2,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        seed=7,
        user="ada",
        metadata={"team": "x"},
        logprobs=False,
        n=1,
        tool_choice="none",
        response_format={"type": "text"},
        extra_body={"parallel_tool_calls": False, "some_future_field": {"a": [1, 2]}, "service_tier": "auto"},
        extra_headers={"OpenAI-Beta": "whatever"},
    )
    assert resp.choices[0].message.content == f"Hello! You said: {tag}"
    (create,) = [e for e in gateway.sim_entries(tag) if e["kind"] == "create"]
    assert create["entertext"] == tag  # no knob leaked into the prompt


def test_too_many_stop_sequences_is_400(gateway: Gateway, tag: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gateway.client().chat.completions.create(
            model=V3, stop=["a", "b", "c", "d", "e"], messages=[{"role": "user", "content": tag}]
        )
    assert exc.value.body["param"] == "stop"  # type: ignore[index]


# --- 5. reasoning ----------------------------------------------------------------------------

THINK = "The user wants 6*7. That is 42."


def test_reasoning_streamed_as_reasoning_content(gateway: Gateway, tag: str) -> None:
    got = _stream(
        gateway.client(),
        model=R1,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"{tag} " + directive(think=THINK, reply=["It is", " 42."])}],
    )
    assert got["reasoning"] == THINK
    assert got["content"] == "It is 42." and "think>" not in got["content"]
    assert got["usage"][0][0].completion_tokens == estimate_tokens(THINK + "It is 42.")


def test_reasoning_in_whole_answer(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=R1, messages=[{"role": "user", "content": f"{tag} " + directive(think=THINK, reply=["It is 42."])}]
    )
    message = resp.choices[0].message
    assert message.content == "It is 42."
    assert message.reasoning_content == THINK  # type: ignore[attr-defined]
    assert resp.usage is not None and resp.usage.completion_tokens == estimate_tokens(THINK + "It is 42.")


def test_think_tags_of_other_models_stay_in_content(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model=V3, messages=[{"role": "user", "content": f"{tag} " + directive(think="hmm", reply=["ok"])}]
    )
    assert resp.choices[0].message.content == "<think>hmm</think>ok"
    assert getattr(resp.choices[0].message, "reasoning_content", None) is None


def test_reasoning_split_can_be_switched_off(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"REASONING_SPLIT": "false"}, workers=1)
    got = _stream(
        gw.client(), model=R1, messages=[{"role": "user", "content": f"{tag} " + directive(think="hmm", reply=["ok"])}]
    )
    assert got["content"] == "<think>hmm</think>ok" and got["reasoning"] == ""


# --- 4. model names ---------------------------------------------------------------------------


def test_models_lists_ids_aliases_and_upstream_names(compat_gateway: Gateway) -> None:
    client = compat_gateway.client()
    listed = {m.id: m for m in client.models.list()}
    ids = ["decopy-deepseek-v3", "decopy-deepseek-r1", "decopy-gemini-2.0-flash", "decopy-gpt-4o-mini"]
    upstream = ["DeepSeek-V3", "DeepSeek-R1", "Gemini-2.0-Flash", "GPT-4o-mini"]
    assert list(listed) == ids + list(COMPAT_ALIASES) + upstream
    assert all(listed[i].alias_of is None for i in ids)  # type: ignore[attr-defined]
    assert listed["gpt-4o"].alias_of == "decopy-deepseek-v3"  # type: ignore[attr-defined]
    assert listed["gpt-4o"].upstream == "DeepSeek-V3"  # type: ignore[attr-defined]
    assert listed["Gemini-2.0-Flash"].alias_of == "decopy-gemini-2.0-flash"  # type: ignore[attr-defined]
    alias = client.models.retrieve("deepseek-reasoner")
    assert alias.id == "deepseek-reasoner" and alias.alias_of == "decopy-deepseek-r1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name, model_id, upstream",
    [
        ("gpt-4o", "decopy-deepseek-v3", "DeepSeek-V3"),
        ("GPT-4O", "decopy-deepseek-v3", "DeepSeek-V3"),
        ("DeepSeek-R1", "decopy-deepseek-r1", "DeepSeek-R1"),
        ("gemini-2.0-flash", "decopy-gemini-2.0-flash", "Gemini-2.0-Flash"),
        ("Decopy-GPT-4o-Mini", "decopy-gpt-4o-mini", "GPT-4o-mini"),
    ],
)
def test_every_accepted_name_reaches_its_model(
    compat_gateway: Gateway, tag: str, name: str, model_id: str, upstream: str
) -> None:
    resp = compat_gateway.client().chat.completions.create(model=name, messages=[{"role": "user", "content": tag}])
    assert resp.model == model_id
    (create,) = [e for e in compat_gateway.sim_entries(tag) if e["kind"] == "create"]
    assert create["model"] == upstream


def test_alias_of_reasoning_model_splits_reasoning(compat_gateway: Gateway, tag: str) -> None:
    resp = compat_gateway.client().chat.completions.create(
        model="deepseek-reasoner", messages=[{"role": "user", "content": f"{tag} " + directive(think="x", reply=["y"])}]
    )
    assert (resp.choices[0].message.content, resp.choices[0].message.reasoning_content) == ("y", "x")  # type: ignore[attr-defined]


# --- 6. headers -------------------------------------------------------------------------------


def test_x_request_id_on_every_response(compat_gateway: Gateway, tag: str) -> None:
    auth = {"Authorization": f"Bearer {compat_gateway.api_key}"}
    chat = {"model": V3, "messages": [{"role": "user", "content": tag}]}
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], int]] = [
        ("POST", "/v1/chat/completions", chat, auth, 200),
        ("POST", "/v1/chat/completions", {**chat, "stream": True}, auth, 200),
        ("POST", "/v1/chat/completions", {**chat, "n": 3}, auth, 400),
        ("POST", "/v1/chat/completions", {**chat, "model": "nope"}, auth, 404),
        ("POST", "/v1/chat/completions", chat, {"Authorization": "Bearer wrong"}, 401),
        ("POST", "/v1/chat/completions", chat, {}, 401),
        ("GET", "/v1/chat/completions", {}, auth, 405),
        ("GET", "/v1/nowhere", {}, auth, 404),
        ("GET", "/v1/models", {}, auth, 200),
        ("GET", "/admin/keys", {}, {"Authorization": "Bearer wrong"}, 401),
        ("GET", "/healthz", {}, {}, 200),
    ]
    seen: set[str] = set()
    with httpx.Client(base_url=compat_gateway.base_url, timeout=30) as http:
        for method, path, body, headers, status in cases:
            kw: dict[str, Any] = {"json": body} if body else {}
            resp = http.request(method, path, headers=headers, **kw)
            assert resp.status_code == status, (method, path, resp.text)
            generated = resp.headers["x-request-id"]
            assert generated.startswith("req_") and generated not in seen
            seen.add(generated)
            mine = f"client-{tag}-{len(seen)}"
            again = http.request(method, path, headers={**headers, "X-Request-ID": mine}, **kw)
            assert again.status_code == status and again.headers["x-request-id"] == mine
        # an id that is not a sane token is replaced, not echoed
        odd = http.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        assert odd.headers["x-request-id"].startswith("req_")


def test_request_id_through_the_sdk_and_in_the_worker_log(gateway: Gateway, tag: str) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=V3, messages=[{"role": "user", "content": tag}], extra_headers={"X-Request-ID": f"sdk-{tag}"}
    )
    assert raw.headers["x-request-id"] == f"sdk-{tag}"
    assert raw.parse().choices[0].message.content
    # the id follows the job to the worker, so one request can be traced across processes
    wait_until(lambda: any(f"request=sdk-{tag}" in w.log() for w in gateway.workers), 10, "worker log line")


def test_openai_processing_ms_on_whole_answers_only(gateway: Gateway, tag: str) -> None:
    client = gateway.client()
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=V3, messages=[{"role": "user", "content": f"{tag} " + directive(reply=["a"], first_ms=300)}]
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    ms = int(raw.headers["openai-processing-ms"])
    assert 300 <= ms <= elapsed_ms + 1  # covers the upstream's 300 ms wait, within what the client saw
    with client.chat.completions.with_streaming_response.create(
        model=V3, stream=True, messages=[{"role": "user", "content": tag}]
    ) as streamed:
        assert "openai-processing-ms" not in streamed.headers
        assert streamed.headers["x-request-id"]
        assert "[DONE]" in streamed.read().decode()


def test_running_job_withdrawn_when_client_leaves_closes_upstream(gateway: Gateway, tag: str) -> None:
    """Regression: JobFeed.close() took a running job for a queued one (arq keeps running jobs in
    its queue), so the worker went on reading the abandoned upstream answer to its end."""
    reply = ["one ", "two ", *SLOW_TAIL]
    stream = gateway.client().chat.completions.create(
        model=V3,
        stream=True,
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=reply, interval_ms=250)}],
    )
    seen = ""
    for chunk in stream:
        seen += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if "two" in seen:
            break
    stream.close()
    entry = _wait_upstream_closed(gateway, tag)
    assert entry["client_closed"] is True and entry["pieces_sent"] < len(reply) // 2
