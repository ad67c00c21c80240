"""[core] Chat completions end to end: real Redis, API, workers; the official openai SDK as client."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.conftest import Gateway, directive

TRICKY = [
    "中文回答，",
    "emoji 🎉🧪 ",
    "line\u2028sep ",
    "quotes \"x\" 'y' ",
    "back\\slash\\n ",
    "data: not an event\n\n",
    "[DONE]",
    " tail\r\nend",
]


def _sse_events(raw: str) -> list[str]:
    return [line[len("data: ") :] for line in raw.split("\n") if line.startswith("data: ")]


def test_stream_shape_over_raw_http(gateway: Gateway, tag: str) -> None:
    body = {
        "model": "decopy-deepseek-v3",
        "stream": True,
        "messages": [{"role": "user", "content": f"{tag}\n" + directive(reply=["Hel", "lo", " world"])}],
    }
    with gateway.http() as http:
        resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["model"] for c in chunks} == {"decopy-deepseek-v3"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello world"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stream_text_exact_with_sdk(gateway: Gateway, tag: str) -> None:
    stream = gateway.client().chat.completions.create(
        model="decopy-gpt-4o-mini",
        stream=True,
        messages=[{"role": "user", "content": f"{tag}\n" + directive(reply=TRICKY)}],
    )
    pieces, finish = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == "".join(TRICKY)
    assert finish == "stop"


def test_whole_answer(gateway: Gateway, tag: str) -> None:
    resp = gateway.client().chat.completions.create(
        model="decopy-gemini-2.0-flash",
        messages=[{"role": "user", "content": f"{tag}\n" + directive(reply=TRICKY)}],
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "".join(TRICKY)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_stream_false_is_json_not_sse(gateway: Gateway, tag: str) -> None:
    with gateway.http() as http:
        resp = http.post(
            "/v1/chat/completions",
            json={"model": "decopy-deepseek-v3", "stream": False, "messages": [{"role": "user", "content": tag}]},
        )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["choices"][0]["message"]["content"].startswith("Hello! You said:")


def test_async_sdk_stream_and_whole(gateway: Gateway, tag: str) -> None:
    async def run() -> tuple[str, str]:
        client = gateway.aclient()
        whole = await client.chat.completions.create(
            model="decopy-deepseek-v3", messages=[{"role": "user", "content": f"{tag} " + directive(reply=["a", "b"])}]
        )
        stream = await client.chat.completions.create(
            model="decopy-deepseek-v3",
            stream=True,
            messages=[{"role": "user", "content": f"{tag} " + directive(reply=["c", "d"])}],
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return whole.choices[0].message.content or "", text

    assert asyncio.run(run()) == ("ab", "cd")


def test_whole_conversation_reaches_upstream(gateway: Gateway, tag: str) -> None:
    messages = [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": f"My name is Ada. {tag}"},
        {"role": "assistant", "content": "Enchanté, Ada."},
        {
            "role": "user",
            "name": "ada",
            "content": [{"type": "text", "text": "What is my name?"}, {"type": "text", "text": directive(echo=True)}],
        },
    ]
    resp = gateway.client().chat.completions.create(model="decopy-deepseek-r1", messages=messages)  # type: ignore[arg-type]
    expected = (
        f"System: You answer in French.\n\nUser: My name is Ada. {tag}\n\nAssistant: Enchanté, Ada.\n\n"
        f"User (ada): What is my name?\n{directive(echo=True)}"
    )
    assert resp.choices[0].message.content == expected
    (create,) = [e for e in gateway.sim_entries(tag) if e["kind"] == "create"]
    assert create["entertext"] == expected
    assert create["model"] == "DeepSeek-R1"


def test_single_user_message_sent_verbatim(gateway: Gateway, tag: str) -> None:
    gateway.client().chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": tag}])
    (create,) = [e for e in gateway.sim_entries(tag) if e["kind"] == "create"]
    assert create["entertext"] == tag


def test_upstream_request_headers(gateway: Gateway, tag: str) -> None:
    gateway.client().chat.completions.create(model="decopy-deepseek-v3", messages=[{"role": "user", "content": tag}])
    entries = gateway.sim_entries(tag)
    create = next(e for e in entries if e["kind"] == "create")
    headers = create["headers"]
    assert headers["product-code"] == "067003"
    assert len(headers["product-serial"]) == 32
    assert headers["origin"] == "https://decopy.ai" and headers["referer"] == "https://decopy.ai/"
    assert "Chrome/" in headers["user-agent"]
    assert headers["content-type"].startswith("multipart/form-data")


def test_models(gateway: Gateway) -> None:
    client = gateway.client()
    ids = [m.id for m in client.models.list()]
    # /v1/models lists every accepted name: the ids, then the upstream's own names.
    assert ids == [
        "decopy-deepseek-v3",
        "decopy-deepseek-r1",
        "decopy-gemini-2.0-flash",
        "decopy-gpt-4o-mini",
        "DeepSeek-V3",
        "DeepSeek-R1",
        "Gemini-2.0-Flash",
        "GPT-4o-mini",
    ]
    model = client.models.retrieve("decopy-deepseek-r1")
    assert model.id == "decopy-deepseek-r1" and model.object == "model" and model.owned_by == "decopy"
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("gpt-5")
    assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_unknown_model_is_404_model_not_found(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        gateway.client().chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 404
    assert exc.value.body == {
        "message": exc.value.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_concurrent_streams_never_mix(gateway: Gateway, tag: str) -> None:
    n = 60

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[int, str]:
        reply = [f"<{i}:{k}>" for k in range(10)]
        stream = await client.chat.completions.create(
            model="decopy-deepseek-v3",
            stream=True,
            messages=[{"role": "user", "content": f"{tag}-{i} " + directive(reply=reply, interval_ms=10)}],
        )
        return i, "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def run() -> list[tuple[int, str]]:
        client = gateway.aclient()
        try:
            return await asyncio.gather(*(one(client, i) for i in range(n)))
        finally:
            await client.close()

    for i, text in asyncio.run(run()):
        assert text == "".join(f"<{i}:{k}>" for k in range(10))
