"""Any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp, a paid provider) as an upstream.

One streamed ``POST {base_url}/chat/completions`` per answer, on the worker's event loop
(aiohttp). The conversation goes as OpenAI messages built from the job's ``turns`` when it has
them, else as its folded ``prompt`` in one user message. Where the upstream declares
``native_tools``, the job's tools, tool choice and output format go as ``tools``,
``tool_choice`` and ``response_format``, and the answer's tool calls come back as
:class:`~worker.upstream.base.ToolCallPiece` (no emulation in the prompt); otherwise the folded
prompt, which carries the emulation, is sent. ``reasoning_content`` (or ``reasoning``) comes
back as :class:`~worker.upstream.base.Reasoning`.

The API key is read from the environment variable the configuration names, when a call is made;
it is never logged nor put in an error. Failures map to the same :class:`UpstreamFailure` kinds
as decopy's: 429 (with its ``Retry-After``) is ``rate_limited``, 5xx a retryable ``http``, other
statuses a final ``http``, timeouts and connection errors by name, and a stream that ends without
``[DONE]`` or a finish reason is ``protocol`` (truncated) or a broken ``connection``.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from shared.messages import ChatJob, OutputFormat, ToolCall, ToolChoice, Turn
from shared.routing import UpstreamConfig
from shared.settings import Settings
from worker.upstream.base import Batch, Finish, Reasoning, ToolCallPiece, UpstreamFailure, trim
from worker.upstream.decopy.fence import no_silent_retry

log = logging.getLogger("worker.openai")

_BODY_LIMIT = 64 * 1024


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: not worth parsing, the default applies


def build_messages(job: ChatJob, *, native: bool) -> list[dict[str, Any]]:
    """The OpenAI ``messages`` for a job: its turns when native (or without tools), else its prompt."""
    turns = job.get("turns")
    if not turns or (not native and (job.get("tools") or job.get("output"))):
        # No structure, or tools and output format the upstream cannot take: the folded prompt
        # (which carries their emulation) as one user message.
        messages: list[dict[str, Any]] = [{"role": "user", "content": job["prompt"]}]
    else:
        messages = [_message(turn) for turn in turns]
    image = job["image"]
    if image is not None:
        for message in reversed(messages):
            if message["role"] == "user":
                url = f"data:{image['content_type']};base64,{base64.b64encode(image['data']).decode()}"
                message["content"] = [
                    {"type": "text", "text": message.get("content") or ""},
                    {"type": "image_url", "image_url": {"url": url}},
                ]
                break
    return messages


def _message(turn: Turn) -> dict[str, Any]:
    role = turn.get("role", "user")
    text = turn.get("text", "")
    if role == "tool":
        return {"role": "tool", "tool_call_id": turn.get("tool_call_id", ""), "content": text}
    message: dict[str, Any] = {"role": role, "content": text}
    if role == "assistant" and turn.get("tool_calls"):
        message["content"] = text or None
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in turn["tool_calls"]
        ]
    if turn.get("name") and role in ("user", "assistant", "system"):
        message["name"] = turn["name"]
    return message


def _tool_choice(choice: ToolChoice) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return choice


def _response_format(output: OutputFormat) -> dict[str, Any] | None:
    if output["type"] == "json_object":
        return {"type": "json_object"}
    if output["type"] == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {
                "name": output["name"] or "answer",
                "schema": output["schema"] or {},
                "strict": output["strict"],
            },
        }
    return None


def build_body(job: ChatJob, *, native: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": job["upstream_model"],
        "messages": build_messages(job, native=native),
        "stream": True,
    }
    if native:
        tools = job.get("tools") or []
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]},
                }
                for t in tools
            ]
            body["tool_choice"] = _tool_choice(job.get("tool_choice", "auto"))
            if "parallel_tool_calls" in job:
                body["parallel_tool_calls"] = job["parallel_tool_calls"]
        output = job.get("output")
        if output is not None:
            fmt = _response_format(output)
            if fmt is not None:
                body["response_format"] = fmt
    return body


class _Calls:
    """Tool calls arriving in fragments (by ``index``), handed out whole at the end."""

    def __init__(self) -> None:
        self._by_index: dict[int, dict[str, str]] = {}

    def feed(self, fragments: list[Any]) -> None:
        for frag in fragments:
            if not isinstance(frag, dict):
                continue
            index = frag.get("index", len(self._by_index))
            call = self._by_index.setdefault(
                int(index) if isinstance(index, int) else 0, {"id": "", "name": "", "arguments": ""}
            )
            if isinstance(frag.get("id"), str) and frag["id"]:
                call["id"] = frag["id"]
            fn = frag.get("function")
            if isinstance(fn, dict):
                if isinstance(fn.get("name"), str):
                    call["name"] += fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call["arguments"] += fn["arguments"]

    def drain(self) -> list[ToolCall]:
        calls = [
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}")
            for i, c in sorted(self._by_index.items())
            if c["name"]
        ]
        self._by_index.clear()
        return calls


class OpenAIUpstream:
    """One OpenAI-compatible endpoint (see the module docstring and :class:`worker.upstream.base.Upstream`)."""

    def __init__(self, config: UpstreamConfig, settings: Settings) -> None:
        self.name = config.name
        self.config = config
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.upstream_connect_timeout, sock_read=settings.upstream_read_timeout
        )
        self._client: aiohttp.ClientSession | None = None

    @property
    def native_tools(self) -> bool:
        return self.config.native_tools

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
            no_silent_retry(self._client)  # the runner's retries and fallback are the one policy
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {**self.config.headers, "Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env, "")
            if key:
                header = self.config.api_key_header
                if header is None or header.lower() == "authorization":
                    headers["Authorization"] = f"Bearer {key}"
                else:
                    headers[header] = key
        return headers

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def pieces(self, job: ChatJob) -> AsyncIterator[Batch]:
        what = f"{self.name} chat/completions"
        body = orjson.dumps(build_body(job, native=self.config.native_tools))
        try:
            resp = await self._session().post(self._url, data=body, headers=self._headers())
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamFailure("timeout", f"{what}: ConnectTimeout", retryable=True) from exc
        except TimeoutError as exc:
            raise UpstreamFailure("timeout", f"{what}: ReadTimeout", retryable=True) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamFailure(
                "connection", f"{what}: ConnectionError: {trim(str(exc), 200) or type(exc).__name__}", retryable=True
            ) from exc
        finished = False
        try:
            if resp.status != 200:
                raise await self._status_failure(resp, what)
            ctype = resp.headers.get("content-type", "")
            if "event-stream" not in ctype:
                text = (await resp.content.read(_BODY_LIMIT)).decode("utf-8", "replace")
                raise UpstreamFailure(
                    "protocol",
                    f"{what}: expected an event stream, got {ctype or 'no content type'}",
                    retryable=True,
                    status=200,
                    body=trim(text, 200),
                )
            async for batch in self._read(resp, what):
                yield batch
            finished = True
        finally:
            # A stream read to its end leaves its connection for the next call; any other way out
            # (a failure, a cancelled job, a client that left) closes it, so the upstream stops.
            if finished:
                resp.release()
            else:
                resp.close()

    async def _status_failure(self, resp: aiohttp.ClientResponse, what: str) -> UpstreamFailure:
        try:
            text = (await resp.content.read(_BODY_LIMIT)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError, OSError):
            text = ""
        status = resp.status
        detail = text
        try:
            err = orjson.loads(text).get("error")
            detail = err.get("message", text) if isinstance(err, dict) else str(err or text)
        except (orjson.JSONDecodeError, AttributeError):
            pass
        if status == 429:
            return UpstreamFailure(
                "rate_limited",
                f"{what}: rate limited (HTTP 429)",
                retryable=True,
                status=429,
                body=trim(text, 200),
                retry_after=_retry_after(resp.headers.get("retry-after")),
            )
        return UpstreamFailure(
            "http",
            f"{what}: HTTP {status}: {trim(detail, 120)}",
            retryable=status >= 500 or status in (408, 409),
            status=status,
            body=trim(text, 200),
        )

    async def _read(self, resp: aiohttp.ClientResponse, what: str) -> AsyncIterator[Batch]:
        calls = _Calls()
        finish: str | None = None
        done = False
        buffer = b""
        content = resp.content
        while not done:
            try:
                data = await content.readany()
            except TimeoutError as exc:
                raise UpstreamFailure("timeout", f"{what}: ReadTimeout", retryable=True) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamFailure(
                    "connection",
                    f"{what}: ConnectionError: Connection broken: {trim(str(exc), 160) or type(exc).__name__}",
                    retryable=True,
                ) from exc
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            texts: list[str] = []
            for raw in lines:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue  # comments, event names, blank separators
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise UpstreamFailure(
                        "protocol",
                        f"{what}: an event is not JSON: {trim(payload.decode('utf-8', 'replace'), 80)}",
                        retryable=True,
                        status=200,
                    ) from None
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise UpstreamFailure(
                        "http",
                        f"{what}: error in the stream: {trim(str(chunk['error']), 120)}",
                        retryable=True,
                        status=200,
                    )
                choices = chunk.get("choices") if isinstance(chunk, dict) else None
                if not choices or not isinstance(choices[0], dict):
                    continue  # a usage-only chunk, or keep-alive
                choice = choices[0]
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    if texts:
                        yield texts
                        texts = []
                    yield Reasoning(reasoning)
                text = delta.get("content")
                if isinstance(text, str) and text:
                    texts.append(text)
                if delta.get("tool_calls"):
                    calls.feed(delta["tool_calls"])
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
            if texts:
                yield texts
        if not done and finish is None:
            raise UpstreamFailure(
                "protocol", f"{what}: the stream ended without [DONE] (truncated)", retryable=True, status=200
            )
        for call in calls.drain():
            yield ToolCallPiece(call)
        reason = finish or "stop"
        yield Finish("stop" if reason in ("function_call",) else reason)
