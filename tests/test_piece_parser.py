"""The decopy stream parser, fed bytes directly: no answer text is lost in silence.

Each malformed form a strange upstream was seen to send: the text around it arrives, what
cannot be decoded becomes U+FFFD (counted), what was split is joined, and an answer piece that
cannot be read at all raises instead of ending the answer cleanly with text missing.
"""

from __future__ import annotations

import json

import pytest

from shared.metrics import WORKER_REGISTRY
from worker.upstream.decopy.parser import PieceParser, UnreadablePiece

END = b"data: Data transfer completed.\n\n"


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def escaped(piece: str) -> bytes:
    """A piece as a JavaScript server escapes it (``json.dumps`` writes lone surrogates as ``\\uXXXX``)."""
    return event(json.dumps({"data": piece}).encode())


def replaced_metric() -> float:
    return WORKER_REGISTRY.get_sample_value("decopy_upstream_replaced_chars_total") or 0.0


def read(*chunks: bytes) -> tuple[str, PieceParser]:
    parser = PieceParser()
    out: list[str] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    assert parser.ended
    return "".join(out), parser


def test_a_lone_surrogate_becomes_one_replacement_and_the_rest_of_the_piece_goes_through() -> None:
    before = replaced_metric()
    text, parser = read(escaped("ok1 "), escaped("bad\ud800bad"), escaped(" ok2"), END)
    assert text == "ok1 bad\ufffdbad ok2"
    assert parser.replaced == 1 and parser.skipped == 0
    assert replaced_metric() == before + 1


def test_a_surrogate_pair_split_across_two_events_is_joined() -> None:
    text, parser = read(escaped("smile \ud83d"), escaped("\ude00 done"), END)
    assert text == "smile \U0001f600 done" and parser.replaced == 0


def test_a_lone_low_surrogate_and_a_high_one_left_at_the_end_are_replaced() -> None:
    text, parser = read(escaped("a\ude00b"), escaped("c\ud83d"), END)
    assert text == "a\ufffdbc\ufffd" and parser.replaced == 2


def test_a_utf8_sequence_split_across_two_events_is_joined() -> None:
    text, _ = read(event(b'{"data":"caf\xc3"}'), event(b'{"data":"\xa9 ok"}'), END)
    assert text == "café ok"


@pytest.mark.parametrize("cut", range(1, 30))
def test_a_byte_sequence_split_across_network_reads_is_joined(cut: int) -> None:
    stream = event('{"data":"café 😀"}'.encode()) + END
    text, parser = read(stream[:cut], stream[cut:])
    assert text == "café 😀" and parser.replaced == 0


def test_invalid_and_overlong_utf8_become_replacements_and_the_rest_goes_through() -> None:
    text, parser = read(
        event(b'{"data":"x\xc0\xafy"}'), event(b'{"data":"a\xffb"}'), event(b'{"data":"c\xe2\x82"}'), END
    )
    assert text == "x\ufffd\ufffdya\ufffdbc\ufffd" and parser.replaced == 4


def test_raw_control_characters_inside_the_json_string_are_read() -> None:
    text, parser = read(event(b'{"data":"a\tb\x01c\x1fd"}'), END)
    assert text == "a\tb\x01c\x1fd" and parser.replaced == 0 and parser.skipped == 0


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_a_bom_before_the_first_event_is_ignored(cut: int) -> None:
    stream = b"\xef\xbb\xbf" + event(b'{"data":"first"}') + END
    text, _ = read(stream[:cut], stream[cut:])
    assert text == "first"


def test_payloads_that_are_not_answer_pieces_are_still_skipped() -> None:
    text, parser = read(
        event(b"{not json"),
        event(b'{"status": "running"}'),
        b": keep-alive\n\nevent: ping\n\n",
        event(b'{"data":"ok"}'),
        END,
    )
    assert text == "ok" and parser.skipped == 1


def test_the_multi_line_form_of_an_event_is_still_read() -> None:
    text, _ = read(b'data: {"data":\ndata: "joined"}\n\n', END)
    assert text == "joined"


def test_an_answer_piece_that_cannot_be_read_raises() -> None:
    parser = PieceParser()
    assert parser.feed(escaped("ok ")) == ["ok "]
    with pytest.raises(UnreadablePiece):
        parser.feed(event(b'{"data": "lost text'))
        parser.feed(END)


def test_well_formed_pieces_take_the_fast_path_unchanged() -> None:
    text, parser = read(escaped("plain "), event('{"data":"ünïcødé \u2028 😀"}'.encode()), END)
    assert text == "plain ünïcødé \u2028 😀" and parser.replaced == 0 and parser.skipped == 0
