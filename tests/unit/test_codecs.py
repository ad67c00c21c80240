"""The byte-level pieces on their own: decopy's event-stream parser, the OpenAI chunk encoder,
and the worker-to-API message codec."""

from __future__ import annotations

import orjson
import pytest

from api.dialects.chat.encode import DONE, ChunkEncoder, completion, error_event
from api.engine.events import Usage
from shared import messages
from shared.errors import UpstreamError
from worker.upstream.decopy.parser import END_MARKER, PieceParser

STREAM = (
    b'data: {"data": "Hel", "status": "running"}\n\n'
    b"event: message\nid: 3\n: a comment\n"
    b'data: {"data": "lo \\u4e16", "status": "running"}\n\n'
    b'data: {"status": "running"}\n\n'
    b"data: " + END_MARKER.encode() + b"\n\n"
    b'data: {"data": "after the end"}\n\n'
)


def _parse(chunks: list[bytes]) -> tuple[str, PieceParser]:
    parser = PieceParser()
    text = "".join(d for chunk in chunks for d in parser.feed(chunk))
    return text, parser


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_parser_reads_the_same_text_however_the_bytes_are_cut(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    text, parser = _parse(chunks)
    assert text == "Hello 世" and parser.ended and parser.skipped == 0


def test_parser_takes_crlf_and_multiline_data_and_skips_garbage() -> None:
    raw = (
        b'data: {"data":\r\ndata: "joined"}\r\n\r\n'  # the SSE spec's multi-line form
        b"data: {not json\n\n"
        b'data: ["a list"]\n\n'
        b'data: {"data": 5}\n\n'
        b"data: \xff\xfe\n\n"
        b'data: {"data": "ok"}\n\n'
    )
    text, parser = _parse([raw])
    assert text == "joinedok" and not parser.ended and parser.skipped == 4


def test_parser_holds_an_unfinished_line_until_its_end() -> None:
    parser = PieceParser()
    assert parser.feed(b'data: {"data": "x"}') == []
    assert parser.feed(b"\n") == ["x"]


def test_chunk_encoder_writes_openai_chunks() -> None:
    enc = ChunkEncoder("chatcmpl-1", "m", created=7, include_usage=True)
    frames = [enc.content("a"), enc.content('"b"\n'), enc.reasoning("r")]
    end = enc.finish("stop", Usage(3, 2))  # the finish chunk, the usage chunk, then [DONE]
    assert end.endswith(DONE)
    frames += [frame + b"\n\n" for frame in end.removesuffix(DONE).split(b"\n\n")[:-1]]
    assert len(frames) == 5
    events = [orjson.loads(f.removeprefix(b"data: ").removesuffix(b"\n\n")) for f in frames]
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}  # the role once, first
    assert events[1]["choices"][0]["delta"] == {"content": '"b"\n'}
    assert events[2]["choices"][0]["delta"] == {"reasoning_content": "r"}
    assert events[3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert events[4]["choices"] == [] and events[4]["usage"]["total_tokens"] == 5
    for event in events:
        assert (event["id"], event["object"], event["created"], event["model"]) == (
            "chatcmpl-1",
            "chat.completion.chunk",
            7,
            "m",
        )
    assert DONE == b"data: [DONE]\n\n"


def test_chunk_encoder_sends_the_role_even_when_no_text_came() -> None:
    enc = ChunkEncoder("chatcmpl-1", "m", created=7)
    frames = enc.finish("length", Usage(0, 0)).split(b"\n\n")[:-1]
    first = orjson.loads(frames[0].removeprefix(b"data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_completion_and_error_event() -> None:
    body = completion(
        completion_id="c", model="m", content="hi", finish_reason="stop", prompt_tokens=1, completion_tokens=1
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    event = orjson.loads(error_event(UpstreamError("boom", code="upstream_http")).removeprefix(b"data: "))
    assert event["error"]["code"] == "upstream_http" and event["error"]["message"] == "boom"


def test_messages_round_trip() -> None:
    sent: list[messages.Message] = [
        {"seq": 0, "kind": "start", "worker": "w"},
        {"seq": 1, "kind": "delta", "text": "x\u2028y"},
        {"seq": 2, "kind": "done", "finish_reason": "stop"},
    ]
    for message in sent:
        assert messages.decode(messages.encode(message)) == message
