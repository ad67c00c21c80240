"""Real clients against the real running gateway: the openai SDK for Python (sync and async,
streamed and whole, its error classes), the openai npm package under Node, LangChain's ChatOpenAI
and plain ``curl -N``. Each talks to the ``compat_gateway`` stack (a master key is set)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from shared.tokens import estimate_tokens
from tests.conftest import Gateway, directive

V3 = "decopy-deepseek-v3"
NODE_DIR = Path(__file__).resolve().parent / "node"


def _msg(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


# --- openai for Python ------------------------------------------------------------------------


def test_python_sync_stream_and_whole(compat_gateway: Gateway, tag: str) -> None:
    client = compat_gateway.client()
    stream = client.chat.completions.create(
        model=V3,
        stream=True,
        stream_options={"include_usage": True},
        messages=_msg(f"{tag} " + directive(reply=["sync ", "stream"])),
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "sync stream"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"
    whole = client.chat.completions.create(model=V3, messages=_msg(f"{tag} " + directive(reply=["sync ", "whole"])))
    assert whole.choices[0].message.content == "sync whole" and whole.choices[0].finish_reason == "stop"
    assert whole.id.startswith("chatcmpl-") and whole.model == V3


def test_python_async_stream_and_whole(compat_gateway: Gateway, tag: str) -> None:
    async def run() -> tuple[str, str | None, str, str | None]:
        async with compat_gateway.aclient() as client:
            stream = await client.chat.completions.create(
                model=V3,
                stream=True,
                stop=["!"],
                messages=_msg(f"{tag} " + directive(reply=["async ", "stre", "am! no"])),
            )
            text, finish = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            whole = await client.chat.completions.create(
                model=V3, max_completion_tokens=2, messages=_msg(f"{tag} " + directive(reply=["async whole answer"]))
            )
            return text, finish, whole.choices[0].message.content or "", whole.choices[0].finish_reason

    assert asyncio.run(run()) == ("async stream", "stop", "async wh", "length")


def test_python_error_classes(compat_gateway: Gateway, tag: str) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        compat_gateway.client(api_key="sk-wrong").chat.completions.create(model=V3, messages=_msg(tag))
    assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        compat_gateway.client().chat.completions.create(model="gpt-7", messages=_msg(tag))
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        compat_gateway.client().chat.completions.create(model=V3, n=2, messages=_msg(tag))
    assert bad.value.param == "n" and bad.value.code == "unsupported_parameter"
    assert auth.value.request_id and missing.value.request_id and bad.value.request_id  # x-request-id, read by the SDK


def test_python_async_error_classes(compat_gateway: Gateway, tag: str) -> None:
    async def run() -> list[type[Exception]]:
        raised: list[type[Exception]] = []
        async with compat_gateway.aclient(api_key="sk-wrong") as wrong, compat_gateway.aclient() as client:
            for call in (
                wrong.models.list(),
                client.models.retrieve("gpt-7"),
                client.chat.completions.create(model=V3, logprobs=True, messages=_msg(tag)),
            ):
                try:
                    await call
                except openai.APIStatusError as exc:
                    raised.append(type(exc))
        return raised

    assert asyncio.run(run()) == [openai.AuthenticationError, openai.NotFoundError, openai.BadRequestError]


def test_python_api_error_mid_stream(compat_gateway: Gateway, tag: str) -> None:
    content = f"{tag} " + directive(reply=["one ", "two ", "three"], stream_fail="cut", after=2)
    stream = compat_gateway.client().chat.completions.create(model=V3, stream=True, messages=_msg(content))
    seen = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            seen += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert seen == "one two "  # what came before the failure, then the error event
    assert not isinstance(exc.value, openai.APIStatusError)  # raised from the event, not from a status

    async def run_async() -> str:
        async with compat_gateway.aclient() as client:
            stream = await client.chat.completions.create(
                model=V3,
                stream=True,
                messages=_msg(f"{tag}a " + directive(reply=["x", "y", "z"], stream_fail="truncate", truncate_after=1)),
            )
            try:
                async for _ in stream:
                    pass
            except openai.APIError as err:
                return str(err)
        return "no error"

    assert "end marker" in asyncio.run(run_async())


def test_python_rate_limit_error(compat_gateway: Gateway, tag: str) -> None:
    """RateLimitError needs a real 429. Only the per-key limits answer 429 (decopy's own 429 is
    retried and then surfaces as 503 upstream_unavailable, see
    test_upstream_429_is_503_not_rate_limit_error), so this test creates a 1-request-per-minute
    key through the admin keys API (docs/keys-and-limits.md)."""
    admin = {"Authorization": f"Bearer {compat_gateway.api_key}"}
    with httpx.Client(base_url=compat_gateway.base_url, timeout=30, headers=admin) as http:
        created = http.post(
            "/admin/keys", json={"name": f"rl-{tag}", "rpm": 1, "max_concurrent": None, "daily_tokens": None}
        )
        assert created.status_code == 201, created.text
        key = created.json()
        try:
            client = compat_gateway.client(api_key=key["key"])
            client.chat.completions.create(model=V3, messages=_msg(tag))
            with pytest.raises(openai.RateLimitError) as exc:
                client.chat.completions.create(model=V3, messages=_msg(tag))
            assert exc.value.status_code == 429 and exc.value.response.headers.get("retry-after")
        finally:
            http.delete(f"/admin/keys/{key['id']}")


def test_upstream_429_is_503_not_rate_limit_error(compat_gateway: Gateway, tag: str) -> None:
    # decopy throttling us is the gateway's trouble, not the client's quota: a 503 to retry later.
    with pytest.raises(openai.InternalServerError) as exc:
        compat_gateway.client().chat.completions.create(
            model=V3, messages=_msg(f"{tag} " + directive(create_fail="429"))
        )
    assert exc.value.status_code == 503 and exc.value.code == "upstream_rate_limited"


# --- openai for Node ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_client() -> Path:
    """tests/node with its locked openai package installed (``npm ci``, once per session)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the openai npm package test (Debian: apt-get install nodejs npm)")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return NODE_DIR / "client.mjs"


def test_node_openai_package(compat_gateway: Gateway, node_client: Path, tag: str) -> None:
    result = subprocess.run(
        ["node", str(node_client), compat_gateway.v1, compat_gateway.api_key, tag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    stream = out["stream"]
    assert stream["content"] == "Node streams work. ✓" and stream["finish"] == "stop"
    assert len(stream["ids"]) == 1 and stream["ids"][0].startswith("chatcmpl-")
    assert stream["usage"]["completion_tokens"] == estimate_tokens("Node streams work. ✓")
    whole = out["whole"]
    # max_tokens 3 = 12 ASCII characters of reasoning and content together: "hm" + "abcdefghij"
    assert whole["content"] == "abcdefghij" and whole["reasoning"] == "hm" and whole["finish"] == "length"
    assert whole["usage"]["completion_tokens"] == 3 and whole["model"] == "decopy-deepseek-r1"
    assert whole["requestId"].startswith("req_") and int(whole["processingMs"]) >= 0
    assert out["error"] == {
        "name": "NotFoundError",
        "status": 404,
        "code": "model_not_found",
        "param": "model",
        "isNotFound": True,
    }
    creates = [e for e in compat_gateway.sim_entries(tag) if e["kind"] == "create"]
    assert sorted(e["model"] for e in creates) == ["DeepSeek-R1", "DeepSeek-V3"]


# --- LangChain ----------------------------------------------------------------------------------


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Fail any name lookup other than the gateway's (a tokenizer download would show here)."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("127.0.0.1", "localhost"):
            asked.append(name)
            raise socket.gaierror(f"test: no network beyond loopback ({name})")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: a tokenizer would need a download
    for var in (
        "LANGSMITH_TRACING",
        "LANGCHAIN_TRACING_V2",
        "LANGSMITH_API_KEY",
        "LANGCHAIN_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    yield asked
    assert asked == [], f"something tried to reach {asked}"


def test_langchain_chat_openai_invoke_and_stream(compat_gateway: Gateway, tag: str, loopback_only: list[str]) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=V3,
        base_url=compat_gateway.v1,
        api_key=compat_gateway.api_key,  # type: ignore[arg-type]  # as users pass it
        max_retries=0,
        timeout=30,
        stream_usage=True,
    )
    answer = llm.invoke([("system", "Be brief."), ("user", f"{tag} " + directive(reply=["Lang", "Chain ", "ok"]))])
    assert answer.content == "LangChain ok"
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == estimate_tokens(
        "LangChain ok"
    )

    chunks = list(llm.stream(f"{tag} " + directive(reply=["str", "eam", "ing!", " cut here"]), stop=["!"]))
    assert "".join(str(c.content) for c in chunks) == "streaming"
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.response_metadata.get("finish_reason") == "stop"
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == estimate_tokens("streaming")

    (create,) = [e for e in compat_gateway.sim_entries(tag) if e["kind"] == "create" and "Be brief" in e["entertext"]]
    assert create["entertext"].startswith("System: Be brief.\n\nUser: ")


# --- curl -N --------------------------------------------------------------------------------------


def _curl(
    gw: Gateway, body: dict[str, Any] | None, *extra: str, path: str = "/v1/chat/completions", key: str | None = None
) -> tuple[str, str]:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    args = [
        curl,
        "-sS",
        "-N",
        "--max-time",
        "60",
        "-D",
        "-",
        "-H",
        f"Authorization: Bearer {key or gw.api_key}",
        *extra,
        gw.base_url + path,
    ]
    if body is not None:
        args[1:1] = ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    raw = subprocess.run(args, capture_output=True, text=True, timeout=90, check=True).stdout
    head, _, payload = raw.replace("\r\n", "\n").partition("\n\n")
    return head.lower(), payload


def test_curl_stream_raw_sse(compat_gateway: Gateway, tag: str) -> None:
    head, payload = _curl(
        compat_gateway,
        {
            "model": V3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": _msg(f"{tag} " + directive(reply=["cu", "rl\n", "ok"])),
        },
        "-H",
        f"X-Request-ID: curl-{tag}",
    )
    assert head.startswith("http/1.1 200")
    assert "content-type: text/event-stream" in head and f"x-request-id: curl-{tag}" in head
    assert payload.endswith("data: [DONE]\n\n")
    events = payload.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)  # one line per event, blank line after
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "curl\nok"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == estimate_tokens("curl\nok")


def test_curl_whole_and_error(compat_gateway: Gateway, tag: str) -> None:
    head, payload = _curl(compat_gateway, {"model": "gpt-4o", "messages": _msg(tag)})
    assert head.startswith("http/1.1 200") and "openai-processing-ms: " in head and "x-request-id: req_" in head
    assert json.loads(payload)["choices"][0]["message"]["content"] == f"Hello! You said: {tag}"
    head, payload = _curl(compat_gateway, None, path="/v1/models", key="sk-wrong")
    assert head.startswith("http/1.1 401") and "x-request-id: req_" in head
    assert json.loads(payload)["error"]["type"] == "authentication_error"
