"""Request validation in process, through Starlette's TestClient: every bad request is a clear 4xx
in OpenAI's error shape, never a 500. (The app's lifespan connects to the unit tests' Redis; no
worker runs, so nothing here reaches a job.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.http.app import create_app
from shared.settings import Settings

CHAT = "/v1/chat/completions"
GOOD: dict[str, Any] = {"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def client(unit_redis_url: str) -> Iterator[TestClient]:
    """One app (one lifespan) for the module: validation keeps no state between requests."""
    settings = Settings.from_env({"REDIS_URL": unit_redis_url, "MAX_BODY_BYTES": "4000"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "decopy-deepseek-v3"}, "messages"),
        ({**GOOD, "messages": []}, "messages"),
        ({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({**GOOD, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({**GOOD, "stream": "yes"}, "stream"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
    ],
)
def test_bad_fields_are_400_naming_the_param(client: TestClient, body: dict[str, Any], param: str) -> None:
    error = _error(client.post(CHAT, json=body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b'{"model": ', "application/json"),
        (b"[1, 2]", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"model": "decopy-deepseek-v3", "max_tokens": 1e999, "messages": []}', "application/json"),
    ],
)
def test_unreadable_bodies_are_400(client: TestClient, content: bytes, ctype: str) -> None:
    error = _error(client.post(CHAT, content=content, headers={"content-type": ctype}), 400)
    assert error["type"] == "invalid_request_error"


def test_an_unknown_model_is_404_and_a_big_body_413(client: TestClient) -> None:
    assert _error(client.post(CHAT, json={**GOOD, "model": "gpt-9"}), 404)["param"] == "model"
    _error(client.post(CHAT, json={**GOOD, "metadata": {"pad": "x" * 5000}}), 413)


def test_an_unknown_route_is_an_openai_404(client: TestClient) -> None:
    _error(client.get("/v1/nothing-here"), 404)
