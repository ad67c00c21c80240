"""OpenAI's Responses API end to end with the openai SDK: whole and streamed (typed
events, rising sequence numbers, one terminal event), stored responses (retrieve, input items,
delete, owned by the key that made them, ``store: false``), a two-turn conversation by
``previous_response_id``, reasoning items, the token limit, and a failure after the start."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest
import redis

from shared import names
from tests.conftest import Gateway, directive, team_key, wait_until

V3 = "decopy-deepseek-v3"


def _sse(raw: str) -> list[dict[str, object]]:
    out = []
    for block in raw.strip().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_sdk_create_whole_and_retrieve(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    resp = client.responses.create(
        model=V3, instructions="Be brief.", input=f"{tag} " + directive(reply=["Hello ", "world"])
    )
    assert resp.id.startswith("resp_") and resp.status == "completed" and resp.output_text == "Hello world"
    assert resp.output[0].type == "message" and resp.usage is not None
    assert resp.usage.output_tokens == 3 and resp.usage.total_tokens == resp.usage.input_tokens + 3
    again = client.responses.retrieve(resp.id)
    assert again.output_text == "Hello world" and again.id == resp.id
    items = client.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].role == "user"  # type: ignore[union-attr]


def test_sdk_stream_typed_events(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    events = list(client.responses.create(model=V3, stream=True, input=f"{tag} " + directive(reply=["one ", "two"])))
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "one two" and final.status == "completed"
    assert client.responses.retrieve(final.id).output_text == "one two"  # stored before the last event


def test_sdk_stream_helper(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    with client.responses.stream(model=V3, input=f"{tag} " + directive(reply=["a", "b", "c"])) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "abc" and final.output_text == "abc"


def test_two_turns_by_previous_response_id(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    first = client.responses.create(model=V3, input=f"{tag} my name is Ada " + directive(reply=["Hi Ada."]))
    second = client.responses.create(
        model=V3, previous_response_id=first.id, input=f"{tag} what is my name? " + directive(reply=["Ada."])
    )
    assert second.output_text == "Ada." and second.previous_response_id == first.id
    sent = [e["entertext"] for e in dialects_gateway.sim_entries("what is my name")]
    assert sent and all("my name is Ada" in t and "Assistant: Hi Ada." in t for t in sent)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model=V3, previous_response_id="resp_nope", input=tag)
    assert missing.value.param == "previous_response_id"


def test_store_false_and_delete_and_other_keys(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    kept = client.responses.create(model=V3, input=f"{tag} " + directive(reply=["kept"]))
    unkept = client.responses.create(model=V3, store=False, input=f"{tag} " + directive(reply=["not kept"]))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    _, secret = team_key(dialects_gateway)
    other = dialects_gateway.client(api_key=secret)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(kept.id)  # another key's response does not exist for this one
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(kept.id)
    mine = other.responses.create(model=V3, input=f"{tag} " + directive(reply=["mine"]))
    assert other.responses.retrieve(mine.id).output_text == "mine"
    client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(kept.id)


def test_token_limit_is_incomplete(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    prompt = f"{tag} " + directive(reply=["a much longer answer than the limit"])
    resp = client.responses.create(model=V3, max_output_tokens=2, input=prompt)
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens" and resp.output_text == "a much l"
    events = list(client.responses.create(model=V3, max_output_tokens=2, stream=True, input=prompt))
    assert events[-1].type == "response.incomplete"
    assert sum(e.type in ("response.completed", "response.incomplete", "response.failed") for e in events) == 1


def test_reasoning_items(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    prompt = f"{tag} " + directive(reply=["Answer."], think="Reasoning here.")
    resp = client.responses.create(model="decopy-deepseek-r1", input=prompt)
    assert [o.type for o in resp.output] == ["reasoning", "message"] and resp.output_text == "Answer."
    events = list(client.responses.create(model="decopy-deepseek-r1", stream=True, input=prompt))
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert deltas == "Reasoning here." and events[-1].type == "response.completed"


def test_failure_after_start_is_response_failed(dialects_gateway: Gateway, tag: str) -> None:
    prompt = f"{tag} " + directive(reply=["a", "b", "c", "d"], stream_fail="cut", after=2)
    with dialects_gateway.http() as http:
        resp = http.post("/v1/responses", json={"model": V3, "stream": True, "input": prompt})
    events = _sse(resp.text)
    assert events[-1]["type"] == "response.failed"
    assert [e["type"] for e in events].count("response.failed") == 1
    assert not any(e["type"] in ("response.completed", "response.incomplete") for e in events)
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]  # type: ignore[index]
    assert "[DONE]" not in resp.text


def test_refusals_name_the_field(dialects_gateway: Gateway, tag: str) -> None:
    client = dialects_gateway.client()
    with pytest.raises(openai.BadRequestError) as background:
        client.responses.create(model=V3, background=True, input=tag)
    assert background.value.param == "background"
    with httpx.Client(base_url=dialects_gateway.base_url, timeout=10) as http:
        bad = http.post(
            "/v1/responses",
            json={"model": V3, "input": [{"type": "computer_call"}]},
            headers={"Authorization": f"Bearer {dialects_gateway.api_key}"},
        )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0]"


def test_stored_record_names_the_key_by_id_and_expires(make_gateway: Callable[..., Gateway], tag: str) -> None:
    gw = make_gateway({"API_MASTER_KEY": "sk-ttl-master", "RESPONSES_TTL_SECONDS": "1.5"}, workers=1)
    gw.api_key = "sk-ttl-master"
    key_id, secret = team_key(gw)
    client = gw.client(api_key=secret)
    resp = client.responses.create(model=V3, input=f"{tag} " + directive(reply=["short-lived"]))
    with redis.Redis.from_url(gw.redis_url) as r:
        raw = r.get(names.stored_response(resp.id))
    assert raw is not None and secret.encode() not in raw
    record = json.loads(raw)
    assert record["owner"] == f"key:{key_id}" and record["response"]["output"][0]["content"][0]["text"] == "short-lived"
    assert client.responses.retrieve(resp.id).output_text == "short-lived"

    def expired() -> bool:
        try:
            client.responses.retrieve(resp.id)
        except openai.NotFoundError:
            return True
        return False

    wait_until(expired, 15, "the stored response to expire")


@pytest.mark.parametrize("store", [True, False])
def test_client_leaving_closes_the_upstream(dialects_gateway: Gateway, tag: str, store: bool) -> None:
    """A stored stream runs through the store's wrapper: leaving mid-stream still ends the job."""
    reply = ["one ", "two ", *[f" filler{i}" for i in range(60)]]  # 15 s if never cut
    prompt = f"{tag} " + directive(reply=reply, interval_ms=250)
    stream = dialects_gateway.client().responses.create(model=V3, stream=True, store=store, input=prompt)
    seen = ""
    for event in stream:
        seen += getattr(event, "delta", "") if event.type == "response.output_text.delta" else ""
        if "two" in seen:
            break
    stream.close()
    entry = wait_until(
        lambda: next((e for e in dialects_gateway.sim_entries(tag) if e["kind"] == "stream" and e["ended"]), None),
        15,
        "upstream stream closed",
    )
    assert entry["client_closed"] is True and entry["pieces_sent"] < len(reply) // 2
