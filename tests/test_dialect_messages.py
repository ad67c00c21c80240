"""Anthropic's Messages API end to end: the anthropic SDK (whole, streamed, count_tokens,
its error classes), the wire events in Anthropic's order, x-api-key with a team key and its limits,
errors in Anthropic's shape from the middleware and the routes, and the model list."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import anthropic
import httpx
import pytest

from tests.conftest import Gateway, directive, team_key

CLAUDE = "claude-sonnet-4-5-20250929"  # matched by the glob alias "claude-*"
VERSION = {"anthropic-version": "2023-06-01"}


@pytest.fixture
def client(dialects_gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=dialects_gateway.base_url, api_key=dialects_gateway.api_key, max_retries=0, timeout=30
    ) as c:
        yield c


def _events(raw: str) -> list[tuple[str, str]]:
    """``(event, data)`` pairs of an SSE body."""
    out = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        out.append((lines.get("event", ""), lines.get("data", "")))
    return out


def test_sdk_create_whole(client: anthropic.Anthropic, tag: str) -> None:
    msg = client.messages.create(
        model=CLAUDE,
        max_tokens=200,
        system="You are terse.",
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=["Hello ", "there"])}],
    )
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello there"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 3
    assert msg.model == "decopy-deepseek-v3"


def test_sdk_stream_text_and_final_message(client: anthropic.Anthropic, tag: str) -> None:
    with client.messages.stream(
        model=CLAUDE,
        max_tokens=200,
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=["one ", "two ", "three"])}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.content[0].text == "one two three"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_stream_events_in_anthropic_order(dialects_gateway: Gateway, tag: str) -> None:
    body = {
        "model": CLAUDE,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": f"{tag} " + directive(reply=["a", "b"])}],
    }
    with dialects_gateway.http() as http:
        resp = http.post("/v1/messages", json=body, headers=VERSION)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in _events(resp.text) if name != "ping"]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "[DONE]" not in resp.text


def test_stop_sequence_and_max_tokens(client: anthropic.Anthropic, tag: str) -> None:
    stopped = client.messages.create(
        model=CLAUDE,
        max_tokens=200,
        stop_sequences=["END", "STOP"],
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=["keep this ST", "OP drop this"])}],
    )
    assert stopped.content[0].text == "keep this "  # type: ignore[union-attr]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "STOP"
    with client.messages.stream(
        model=CLAUDE,
        max_tokens=2,
        messages=[{"role": "user", "content": f"{tag} " + directive(reply=["a longer answer than two tokens"])}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content[0].text == "a longer"  # type: ignore[union-attr]


def test_thinking_blocks_for_a_reasoning_model(client: anthropic.Anthropic, tag: str) -> None:
    prompt = f"{tag} " + directive(reply=["The answer."], think="Let me think.")
    msg = client.messages.create(model="claude-thinks", max_tokens=300, messages=[{"role": "user", "content": prompt}])
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Let me think."  # type: ignore[union-attr]
    assert msg.content[1].text == "The answer."  # type: ignore[union-attr]
    with client.messages.stream(
        model="claude-thinks", max_tokens=300, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in final.content] == [
        ("thinking", "Let me think."),
        ("text", "The answer."),
    ]
    hidden = client.messages.create(
        model="claude-thinks",
        max_tokens=300,
        thinking={"type": "disabled"},
        messages=[{"role": "user", "content": prompt}],
    )
    assert [b.type for b in hidden.content] == ["text"]


def test_history_with_tool_turns_reaches_the_upstream(
    dialects_gateway: Gateway, client: anthropic.Anthropic, tag: str
) -> None:
    msg = client.messages.create(
        model=CLAUDE,
        max_tokens=100,
        tools=[{"name": "read_file", "description": "Read a file", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": f"{tag} read it"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.txt"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                    {"type": "text", "text": directive(reply=["It says 42."])},
                ],
            },
        ],
    )
    assert msg.content[0].text == "It says 42."  # type: ignore[union-attr]
    # The result went upstream in the folded conversation; the earlier reasoning did not.
    sent = {e["entertext"] for e in dialects_gateway.sim_entries(tag)}
    assert len(sent) == 1 and all("42" in text and "hmm" not in text for text in sent)


def test_count_tokens(client: anthropic.Anthropic, tag: str) -> None:
    counted = client.messages.count_tokens(
        model=CLAUDE, system="Be brief.", messages=[{"role": "user", "content": f"{tag} how many tokens is this?"}]
    )
    assert counted.input_tokens > 5
    longer = client.messages.count_tokens(
        model=CLAUDE, system="Be brief.", messages=[{"role": "user", "content": f"{tag} how many tokens is this?" * 10}]
    )
    assert longer.input_tokens > counted.input_tokens


def test_errors_in_anthropic_shape(dialects_gateway: Gateway, client: anthropic.Anthropic, tag: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=CLAUDE, max_tokens=0, messages=[{"role": "user", "content": tag}])
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="gpt-7", max_tokens=10, messages=[{"role": "user", "content": tag}])
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with httpx.Client(base_url=dialects_gateway.base_url, timeout=10) as http:
        no_key = http.post("/v1/messages", json={}, headers=VERSION)
        wrong = http.post("/v1/messages", json={}, headers={**VERSION, "x-api-key": "sk-wrong"})
        no_route = http.get("/v1/messages/nothing", headers={**VERSION, "x-api-key": dialects_gateway.api_key})
    for resp, status, kind in ((no_key, 401, "authentication_error"), (wrong, 401, "authentication_error")):
        assert resp.status_code == status and resp.json() == {
            "type": "error",
            "error": {"type": kind, "message": resp.json()["error"]["message"]},
        }
    assert no_route.status_code in (404, 405) and no_route.json()["type"] == "error"
    image = base64.b64encode(b"not an image").decode()
    with pytest.raises(anthropic.BadRequestError) as bad_image:
        client.messages.create(
            model=CLAUDE,
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                        {"type": "text", "text": tag},
                    ],
                }
            ],
        )
    assert "messages[0].content[0].source" in str(bad_image.value)


def test_team_key_by_x_api_key_and_its_rate_limit(dialects_gateway: Gateway, tag: str) -> None:
    _, secret = team_key(dialects_gateway, rpm=1)
    with anthropic.Anthropic(base_url=dialects_gateway.base_url, api_key=secret, max_retries=0) as client:
        msg = client.messages.create(
            model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": f"{tag} " + directive(reply=["ok"])}]
        )
        assert msg.content[0].text == "ok"  # type: ignore[union-attr]
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": tag}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    with dialects_gateway.http() as admin:
        usage = {row["name"]: row for row in admin.get("/admin/usage").json()["data"]}
    assert any(row["total"]["requests"] >= 1 and row["total"]["completion_tokens"] > 0 for row in usage.values())


def test_failure_after_start_is_an_error_event(dialects_gateway: Gateway, tag: str) -> None:
    prompt = f"{tag} " + directive(reply=["a", "b", "c", "d"], stream_fail="cut", after=2)
    body = {"model": CLAUDE, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    with dialects_gateway.http() as http:
        resp = http.post("/v1/messages", json=body, headers=VERSION)
    events = _events(resp.text)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error" and '"type":"error"' in events[-1][1]
    assert not any(name == "message_stop" for name, _ in events)


def test_models_in_anthropic_shape(client: anthropic.Anthropic, dialects_gateway: Gateway) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "decopy-deepseek-v3" in ids and all(m.type == "model" for m in page.data)
    assert client.models.retrieve("claude-opus-4-1").id == "claude-opus-4-1"
    with dialects_gateway.http() as http:
        openai_shape = http.get("/v1/models").json()
    assert openai_shape["object"] == "list"


def test_pings_while_the_upstream_is_silent(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"PING_INTERVAL": "0.2", "MODEL_ALIASES": '{"claude-*": "decopy-deepseek-v3"}'}, workers=1)
    prompt = f"{tag} " + directive(reply=["x", "y"], interval_ms=900)
    body = {"model": CLAUDE, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    with gw.http() as http:
        resp = http.post("/v1/messages", json=body, headers=VERSION)
    events = _events(resp.text)
    assert ("ping", '{"type":"ping"}') in events
    assert events[-1][0] == "message_stop"
