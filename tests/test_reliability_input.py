"""Bad input never reaches a 500 or a worker crash: a table of hostile requests,
then schemathesis fuzzing every operation of ``GET /openapi.json`` against a running gateway
(no 5xx, every error in OpenAI's shape, responses as documented). Also: the OpenAPI document is
valid OpenAPI 3.1 and names every route of the app.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.errors import LoaderError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from api.http.app import create_app
from api.http.openapi import ENDPOINTS, UI_PREFIX, build_document
from shared.settings import DEFAULT_MODELS, Settings
from tests.conftest import Gateway, assert_openai_error
from tests.reliability_support import MODEL, creates, private_gateway

KEY = "sk-master-fuzz"
MAX_BODY = 200_000
CHAT = "/v1/chat/completions"
GOOD: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    env = {"API_MASTER_KEY": KEY, "MAX_BODY_BYTES": str(MAX_BODY), "WORKER_CONCURRENCY": "16"}
    with private_gateway(env, workers=1) as gw:
        gw.api_key = KEY
        yield gw


def _post(
    gw: Gateway, content: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        return http.post(
            CHAT,
            content=content,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type, **(headers or {})},
        )


def _with(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


# (id, body bytes, content type, status, param or None, words the message must contain)
BAD_BODIES: list[tuple[str, bytes, str, int, str | None, str]] = [
    ("malformed-json", b'{"model": "x", "messages": [', "application/json", 400, None, "not valid JSON"),
    ("empty-body", b"", "application/json", 400, None, "empty"),
    ("not-an-object", b"[1, 2, 3]", "application/json", 400, None, "JSON object"),
    ("json-null", b"null", "application/json", 400, None, "JSON object"),
    ("invalid-utf8", b'{"model": "\xff\xfe", "messages": []}', "application/json", 400, None, "UTF-8"),
    (
        "lone-surrogate",
        _with(messages=[{"role": "user", "content": "x"}]).replace(b'"x"', b'"\\ud800"'),
        "application/json",
        400,
        None,
        "surrogate",
    ),
    ("deeply-nested", b"[" * 5000 + b"]" * 5000, "application/json", 400, None, "not valid JSON"),
    (
        "nested-in-a-field",
        _with(metadata=json.loads('{"a":' * 500 + "1" + "}" * 500)),
        "application/json",
        200,
        None,
        "",
    ),
    ("xml", b"<chat/>", "application/xml", 415, None, "application/json"),
    ("form", b"model=x", "application/x-www-form-urlencoded", 415, None, "application/json"),
    ("model-not-a-string", _with(model=5), "application/json", 400, "model", "string"),
    ("messages-a-string", _with(messages="hi"), "application/json", 400, "messages", "list"),
    ("missing-messages", json.dumps({"model": MODEL}).encode(), "application/json", 400, "messages", "required"),
    ("empty-messages", _with(messages=[]), "application/json", 400, "messages", "at least 1"),
    ("message-not-an-object", _with(messages=["hi"]), "application/json", 400, "messages[0]", ""),
    (
        "unknown-role",
        _with(messages=[{"role": "wizard", "content": "x"}]),
        "application/json",
        400,
        "messages[0].role",
        "'user'",
    ),
    (
        "no-user-message",
        _with(messages=[{"role": "system", "content": "x"}]),
        "application/json",
        400,
        "messages",
        "role 'user'",
    ),
    (
        "unknown-part-type",
        _with(messages=[{"role": "user", "content": [{"type": "audio", "data": "x"}]}]),
        "application/json",
        400,
        "messages[0].content[0]",
        "Unknown content part type",
    ),
    (
        "part-without-type",
        _with(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "application/json",
        400,
        "messages[0].content[0]",
        "",
    ),
    (
        "bad-image-url",
        _with(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
        "application/json",
        400,
        "messages[0].content[0].image_url.url",
        "data: URL or an http(s) URL",
    ),
    (
        "bad-base64",
        _with(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]}
            ]
        ),
        "application/json",
        400,
        "messages[0].content[0].image_url.url",
        "base64",
    ),
    ("stream-not-bool", _with(stream="yes"), "application/json", 400, "stream", "boolean"),
    ("max-tokens-zero", _with(max_tokens=0), "application/json", 400, "max_tokens", "greater than or equal to 1"),
    ("temperature-a-string", _with(temperature="hot"), "application/json", 400, "temperature", "number"),
    (
        "huge-number",
        b'{"model": "decopy-deepseek-v3", "max_tokens": 1e999, "messages": []}',
        "application/json",
        400,
        None,
        "",
    ),
    ("over-the-size-cap", _with(metadata={"pad": "x" * (MAX_BODY + 10)}), "application/json", 413, None, str(MAX_BODY)),
    ("unknown-model", _with(model="gpt-9"), "application/json", 404, "model", "does not exist"),
]


@pytest.mark.parametrize("name, content, ctype, status, param, says", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_body(
    gw: Gateway, name: str, content: bytes, ctype: str, status: int, param: str | None, says: str
) -> None:
    resp = _post(gw, content, ctype)
    if status == 200:
        assert resp.status_code == 200, resp.text
        return
    err = assert_openai_error(resp, status)
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param, err
    assert says in err["message"], err


def test_body_over_the_cap_without_content_length(gw: Gateway) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "decopy-deepseek-v3", "metadata": {"pad": "'
        for _ in range(MAX_BODY // 10_000 + 2):
            yield b"x" * 10_000
        yield b'"}, "messages": [{"role": "user", "content": "hi"}]}'

    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        resp = http.post(
            CHAT, content=chunks(), headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        )
    assert "content-length" not in resp.request.headers
    assert_openai_error(resp, 413)


def _raw_post(gw: Gateway, authorization: bytes | None) -> tuple[int, dict[str, Any]]:
    """A POST sent byte for byte (httpx refuses to send malformed header values)."""
    port = int(gw.base_url.rsplit(":", 1)[1])
    payload = _with()
    head = b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    head += b"Content-Length: " + str(len(payload)).encode() + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + payload)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status = int(raw.split(b" ", 2)[1])
    return status, json.loads(raw.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "missing_api_key"),
        (b"Bearer", "invalid_api_key"),
        (b"Bearer ", "invalid_api_key"),
        (b"Bearer \t ", "invalid_api_key"),
        (b"Basic dXNlcjpwYXNz", "invalid_api_key"),
        (b"Bearer wrong-key", "invalid_api_key"),
        (b"bearer   " + b"x" * 5000, "invalid_api_key"),
        (b"Bearer \xff\xfe\x80", "invalid_api_key"),
        (b"\xc3\xa9t\xc3\xa9", "invalid_api_key"),
    ],
    ids=[
        "missing",
        "scheme-only",
        "trailing-space",
        "blank-token",
        "basic",
        "wrong-key",
        "huge",
        "not-ascii",
        "garbage",
    ],
)
def test_missing_or_malformed_authorization(gw: Gateway, header: bytes | None, code: str) -> None:
    status, body = _raw_post(gw, header)
    assert status == 401, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    assert err["type"] == "authentication_error" and ("Bearer" in err["message"] or "API key" in err["message"])


def test_odd_but_valid_text_reaches_the_upstream_and_the_worker_survives(gw: Gateway, tag: str) -> None:
    odd = f"{tag} nul\x00 bell\x07 bidi\u202e emoji🧪 {'long ' * 20_000}"
    resp = gw.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": odd}])
    assert resp.choices[0].message.content
    (create,) = [e for e in gw.sim_entries(tag) if e["kind"] == "create"]
    assert create["entertext"] == odd


# --- The OpenAPI document -----------------------------------------------------------------------


def _doc(gw: Gateway) -> dict[str, Any]:
    resp = httpx.get(gw.base_url + "/openapi.json", timeout=10)  # public: no key needed
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    return dict(resp.json())


def test_openapi_document_is_valid_openapi_3_1(gw: Gateway) -> None:
    doc = _doc(gw)
    assert doc["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(copy.deepcopy(doc)).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in doc["components"]["schemas"].items():  # each one a valid JSON Schema 2020-12
        assert jsonschema_rs.meta.is_valid({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}), name
    broken = copy.deepcopy(doc)
    del broken["paths"][CHAT]["post"]["responses"]["200"]["description"]  # the check can fail
    with pytest.raises((jsonschema_rs.ValidationError, LoaderError)):
        schemathesis.openapi.from_dict(broken).validate()


def test_openapi_document_names_every_route() -> None:
    def normalize(path: str) -> str:
        return re.sub(r"{(\w+)(:\w+)?}", r"{\1}", path)

    app_routes = create_app(Settings()).routes  # every route the app serves, admin ones included
    served = {
        (m, normalize(r.path))
        for r in app_routes
        if isinstance(r, Route)
        for m in (r.methods or ())
        if m != "HEAD" and not r.path.startswith(UI_PREFIX)
    }
    documented = {(ep.method, ep.path) for ep in ENDPOINTS}
    assert served == documented


def test_openapi_documents_what_the_gateway_answers(gw: Gateway) -> None:
    """Real answers validate against the documented schemas (the fuzz below checks many more)."""
    doc = build_document([MODEL])
    schemas = doc["components"]["schemas"]

    def validator(name: str) -> jsonschema_rs.Validator:
        return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})

    with gw.http() as http:
        validator("ChatCompletion").validate(http.post(CHAT, json=GOOD).json())
        validator("ModelList").validate(http.get("/v1/models").json())
        validator("Model").validate(http.get(f"/v1/models/{MODEL}").json())
        validator("Error").validate(http.get("/v1/models/nope").json())
        lines = http.post(CHAT, json={**GOOD, "stream": True}).text.splitlines()
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    for chunk in chunks:
        validator("ChatCompletionChunk").validate(chunk)
    # The text/event-stream schema describes one event, as schemathesis checks it (ST108): it once
    # said "a string", and the fuzz failed whenever it happened to draw a valid streamed request.
    events = [{"data": line[6:], "event": "message"} for line in lines if line.startswith("data: ")]
    assert events[-1]["data"] == "[DONE]" and len(events) == len(chunks) + 1
    for event in events:
        validator("ChatCompletionStream").validate(event)
    assert "ChatCompletionRequest" in schemas


# --- Fuzzing with schemathesis -------------------------------------------------------------------


def openai_error_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]) -> bool | None:
    """Every error answer is OpenAI's envelope with a message that says something (Anthropic's
    shape, exactly, on Anthropic's routes)."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {response.content[:200]!r}") from None
    if case.path.startswith("/v1/messages"):
        err = body.get("error") if isinstance(body, dict) else None
        if set(body) != {"type", "error"} or not isinstance(err, dict) or set(err) != {"type", "message"}:
            raise AssertionError(f"not Anthropic's error shape: {body!r:.300}")
        if not isinstance(err["message"], str) or not err["message"].strip():
            raise AssertionError(f"error without a message: {body!r:.300}")
        return None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or set(err) != {"message", "type", "param", "code"}:
        raise AssertionError(f"not OpenAI's error envelope: {body!r:.300}")
    if not isinstance(err["message"], str) or not err["message"].strip():
        raise AssertionError(f"error without a message: {body!r:.300}")
    return None


# schemathesis' lazy loader (``schemathesis.pytest.from_fixture``) sets a private attribute of
# pytest's nodes that pytest 9.2 no longer has; the document is built in-process anyway, so it is
# loaded at collection time, and test_served_document_is_the_fuzzed_one ties it to the server's.
FUZZED_DOC = build_document(list(DEFAULT_MODELS))
fuzzed = schemathesis.openapi.from_dict(copy.deepcopy(FUZZED_DOC))


@fuzzed.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Half of the bodies that look well-formed get a known model and a user turn, so the fuzz
    reaches the worker and the upstream too (random model names alone only ever get a 404).
    Bodies whose flaw is the model or the messages list are left as they are."""
    if not (
        isinstance(body, dict)
        and isinstance(body.get("model"), str)
        and body["model"]
        and isinstance(body.get("messages"), list)
        and body["messages"]
    ):
        return st.just(body)
    routed = {**body, "model": MODEL, "messages": [*body["messages"], {"role": "user", "content": "fuzz"}]}
    return st.sampled_from([body, routed])


def test_served_document_is_the_fuzzed_one(gw: Gateway) -> None:
    assert _doc(gw) == FUZZED_DOC


@pytest.mark.slow
@fuzzed.parametrize()
@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,  # derandomize: a fixed seed
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_every_endpoint(case: schemathesis.Case[Any], gw: Gateway) -> None:
    case.call_and_validate(
        base_url=gw.base_url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
            openai_error_shape,
        ],
    )


@pytest.mark.slow
def test_fuzz_reached_the_workers(gw: Gateway) -> None:
    """Fuzzing the chat operation produces answers, not only refusals: valid bodies go through a
    worker to the upstream. The test draws its own cases (the same document and hook, a fixed
    seed), so it holds whether it runs alone, first or after the fuzz above."""
    seen: Counter[int] = Counter()
    before = len(creates(gw, ""))

    @given(case=fuzzed[CHAT]["POST"].as_strategy())
    @settings(
        max_examples=100,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def draw(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=gw.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        seen[response.status_code] += 1

    draw()
    assert seen[200] >= 5 and seen[400] >= 5, seen
    assert len(creates(gw, "")) - before >= seen[200]  # each answer reached the upstream
    assert all(status < 500 for status in seen), seen
