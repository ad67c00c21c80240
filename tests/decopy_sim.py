"""A local stand-in for decopy.ai's "Ask AI" API, failures included.

Speaks the protocol of ``upstream-decopy.md``: a multipart ``create-job`` that
returns a job id, then a ``get-job`` SSE stream of ``data: {"data": "<piece>"}``
events ended by ``data: Data transfer completed.``. Both check ``Origin``,
``product-code`` and ``product-serial``; create-job checks the form strictly.
Bad requests get decopy's ``{"code": 100400, ...}``; unknown jobs ``100404``.

Behaviour is chosen per request by a directive in ``entertext`` (the gateway
copies the user's text there verbatim), so concurrent tests share no settings:
``@@sim@@ {json}`` on a line; the last marker wins and its JSON runs to the end
of that line; invalid JSON or a non-object counts as no directive. Fields:

* answer: ``reply`` (list of str) exact pieces; else ``echo: true`` the whole
  entertext in 40-char pieces; else ``n`` pieces ``"tok{i} "``; else
  ``Hello! You said: <last 60 chars of the last non-empty, non-directive line>``
  in up to 6 pieces.
* ``think`` (str): prepend ``<think>..</think>`` with both tags split across
  pieces (``<thi`` | ``nk>..`` | ``..</th`` | ``ink>`` + first answer piece).
* ``interval_ms`` (default 5) between pieces, ``first_ms`` before the first.
* ``split_ms``: create-job's answer body goes out in three parts that many ms apart
  (as a network may deliver it); a client must read it whole.
* ``raw`` (list of str, each char one byte U+0000..U+00FF): the stream's bytes exactly, each
  item in its own write, then the end frame: lone surrogates, split surrogate pairs, invalid,
  overlong or split UTF-8, raw control characters, a BOM (``"\u00ef\u00bb\u00bf"``), a byte
  sequence split across network reads. Replaces the answer's pieces.
* ``malformed: true``: junk lines (bad JSON, JSON without ``data``, ``event:``,
  ``id:``, ``retry:``, comments) between the real events.
* ``create_fail`` / ``stream_fail`` (mode), ``times`` (default: always),
  ``key`` (default: the directive's JSON text): the first ``times`` calls of that
  kind with that key fail. Modes for both: ``cloudflare`` (403, ``cf-mitigated:
  challenge``, "Just a moment..." page), ``cloudflare503``, ``429``
  (``Retry-After: 1``), ``500``, ``502``, ``code`` (200, code 100500),
  ``html200``, ``drop`` (the TCP connection closes with no answer at all),
  ``hang`` (silence for ``hang_ms``, default 60000, then a normal answer).
  Create only: ``nojobid`` (code 100000, ``result: {}``). Stream only:
  ``truncate`` (``truncate_after`` pieces, default 3, then a clean end of body
  without the end marker), ``hang_after`` (``after`` pieces, default 3, then
  silence for ``hang_ms``, then the rest), ``cut`` (``after`` pieces, then the
  TCP connection is cut mid-body). An unknown mode answers HTTP 400 (a typo
  must not pass as success) and logs outcome ``sim_error``.

A model that follows the gateway's tool-call convention (``shared.tools.convention``), by
directive (see :func:`tool_directive` and :func:`tool_pieces`):

* ``call``: an object ``{"name": ..., "arguments": {...}}``, or a list of them (parallel calls):
  answer with ``<tool_call>{...}</tool_call>`` blocks (unknown tools and bad arguments are just
  what the test puts there); ``prose`` (str): text before the calls; ``after_text`` (str): text
  after them; ``call_style``: ``plain`` (default), ``fence_json`` (the JSON in a ```json fence
  inside the tag), ``in_code`` (the whole block inside a code fence: text, not a call),
  ``broken`` (trailing commas: repairable), ``garbage`` (not JSON), ``unclosed`` (no closing
  tag); ``split``: ``chars`` (one piece per character) or, by default, pieces cut inside the tags.
* ``after_tool`` (object): the directive used instead once the prompt holds a tool result (a
  ``Tool (…):`` block after the directive); nested ``after_tool`` s serve later rounds. In its
  ``reply``, ``{result}`` stands for the text of the last tool result (so a test can prove the
  client ran the tool and sent its output back).
* ``on_correction`` (object): the directive used instead when the prompt ends with the
  gateway's ``Correction:`` block (its corrective retry).

Without any directive, a prompt whose convention demands a call (``you must call…``) or a JSON
answer (an ``Output:`` block) gets a minimal valid one, as a model that follows the rules would
answer (:func:`compliant_pieces`): the fuzz tests send such requests with random tools and schemas.

A default for requests whose entertext carries no directive (a client whose prompt is
fixed, like the gateway's upstream doctor): ``POST /_sim/default`` with a directive's JSON
object as body (``{}`` clears it; setting it also restarts the ``times`` counters).

With ``--demo`` (``make demo``), a request with no directive and no default is answered like a
model would (``tests/sim_persona.py``): varied replies, ``<think>`` for DeepSeek-R1, tool calls.

Also ``GET /_sim/log`` (every request, in order; see ``LogEntry``),
``POST /_sim/reset`` (log, ``times`` counters and the default), ``GET /_sim/health``.
Run ``python -m tests.decopy_sim --host H --port 0``: prints ``SIM_READY URL``; with
``--certfile C --keyfile K`` it serves https (the doctor's TLS step is tested that way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
import secrets
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Generator, Iterable
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

MARKER = "@@sim@@ "
MODELS = frozenset({"DeepSeek-V3", "DeepSeek-R1", "Gemini-2.0-Flash", "GPT-4o-mini"})
END_FRAME = b"data: Data transfer completed.\n\n"
JUNK = (
    b"data: {not json\n\n",
    b'data: {"status": "running", "note": "no data"}\n\n',
    b"event: ping\n\n",
    b"id: 7\n\n",
    b": comment\n\n",
    b"retry: 1000\n\n",
)  # cycled, one before each real event
UUID4_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.I)
IMAGE_NAME_RE = re.compile(r"image\.(png|jpe?g|gif|webp)")
CF_HTML = (
    b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head><body>'
    b"<noscript>Enable JavaScript and cookies to continue</noscript></body></html>"
)
HTML = "text/html; charset=UTF-8"
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
STREAM_MODES = (None, "hang", "truncate", "hang_after", "cut")  # handled while streaming


class Invalid(Exception):
    """A request a strict server refuses; the message is the English reason."""


@dataclasses.dataclass(frozen=True)
class Directive:
    """The test's instructions found in one entertext (``fields`` empty: none)."""

    raw: str = ""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def num(self, name: str, default: int) -> int:
        """A non-negative int field, or ``default`` when absent or mistyped."""
        value = self.fields.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default

    def seconds(self, name: str, default_ms: int) -> float:
        return self.num(name, default_ms) / 1000


def parse_directive(text: str) -> Directive:
    """The last ``@@sim@@ {json}`` directive in ``text``, or an empty one."""
    start = text.rfind(MARKER)
    if start < 0:
        return Directive()
    end = text.find("\n", start)
    raw = text[start + len(MARKER) : None if end < 0 else end].strip()
    try:  # json, not orjson: it accepts lone surrogates, so tests can send any str
        fields = json.loads(raw)
    except ValueError:
        return Directive()
    return Directive(raw, fields) if isinstance(fields, dict) else Directive()


@dataclasses.dataclass
class ImageInfo:
    filename: str
    content_type: str
    size: int
    sha256: str


@dataclasses.dataclass
class Job:
    """A created job: what reached the upstream, and its pre-encoded answer."""

    job_id: str
    entertext: str
    model: str
    chat_id: str
    headers: dict[str, str]
    image: ImageInfo | None
    image_bytes: bytes | None
    directive: Directive
    frames: list[bytes]  # SSE bytes, one real piece each (junk included), encoded once
    end_frame: bytes


@dataclasses.dataclass
class LogEntry:
    """One request as ``GET /_sim/log`` shows it.

    ``outcome``: ``running``, ``ok``, ``failed:<mode>`` (a failure mode was
    applied), ``client_closed`` (the client left a healthy stream early),
    ``invalid`` (reason in ``error``), ``unknown_job``, ``sim_error`` (bad mode).
    """

    kind: str  # "create" | "stream"
    job_id: str | None
    headers: dict[str, str]  # lowercased names
    started: float
    entertext: str | None = None
    model: str | None = None
    chat_id: str | None = None
    image: ImageInfo | None = None
    ended: float | None = None
    client_closed: bool = False
    pieces_sent: int = 0
    outcome: str = "running"
    status: int | None = None
    error: str | None = None

    def finish(self, outcome: str, status: int | None = None) -> None:
        self.ended, self.outcome = time.time(), outcome
        self.status = status or self.status


class SimState:
    """All mutable state of one simulator app (held in ``app.state.sim``)."""

    def __init__(self, max_jobs: int = 20_000) -> None:
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.log: list[LogEntry] = []
        self.max_jobs = max_jobs  # bounds memory in load tests; the oldest jobs go first
        # Set by the entry point to uvicorn's live connections, so "drop" can cut
        # a TCP connection (ASGI has no way to close one without answering).
        self.connections: Callable[[], Iterable[Any]] | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # the app may also be driven from threads (TestClient)
        self.default = Directive()  # applies to requests without a directive of their own
        # --demo: answers requests without any directive (entertext, model) -> pieces
        self.persona: Callable[[str, str], list[str]] | None = None

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self._counts.clear()
            self.default = Directive()

    def set_default(self, directive: Directive) -> None:
        with self._lock:
            self._counts.clear()
            self.default = directive

    def add_job(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        while len(self.jobs) > self.max_jobs:
            self.jobs.popitem(last=False)

    def failure(self, kind: str, directive: Directive) -> str | None:
        """The failure mode this call of ``kind`` ("create"/"stream") must show, if any."""
        mode, key = directive.fields.get(f"{kind}_fail"), directive.fields.get("key")
        if not isinstance(mode, str):
            return None
        counter = (kind, key if isinstance(key, str) else directive.raw)
        with self._lock:
            seen = self._counts[counter] = self._counts.get(counter, 0) + 1
        limit = directive.fields.get("times")
        return None if isinstance(limit, int) and seen > limit else mode


def answer_pieces(directive: Directive, entertext: str) -> list[str]:
    """The text pieces a job's stream carries, per the directive."""
    directive = tool_directive(directive, entertext)
    fields = directive.fields
    reply = fields.get("reply")
    if isinstance(reply, list) and any(isinstance(p, str) and "{result}" in p for p in reply):
        result = last_tool_result(entertext)
        reply = [p.replace("{result}", result) if isinstance(p, str) else p for p in reply]
    calls = tool_pieces(fields) if fields else compliant_pieces(entertext)
    if calls is not None:
        pieces = calls
    elif isinstance(reply, list) and all(isinstance(p, str) for p in reply):
        pieces = list(reply)
    elif fields.get("echo") is True:
        pieces = [entertext[i : i + 40] for i in range(0, len(entertext), 40)]
    elif "n" in fields:
        pieces = [f"tok{i} " for i in range(directive.num("n", 0))]
    else:
        lines = [ln for ln in entertext.split("\n") if ln.strip() and MARKER not in ln]
        text = f"Hello! You said: {lines[-1].strip()[-60:] if lines else ''}"
        cuts = [len(text) * i // 6 for i in range(7)]
        pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    think = fields.get("think")
    if isinstance(think, str):  # split inside both tags: a parser must buffer across pieces
        half, rest = len(think) // 2, pieces or [""]
        pieces = ["<thi", "nk>" + think[:half], think[half:] + "</th", "ink>" + rest[0], *rest[1:]]
    return pieces


# --- a model that calls tools (see the module docstring) ------------------------------------

_TOOL_RESULT = re.compile(r"\n\nTool \(")
_CORRECTION = "\n\nCorrection: "


def tool_directive(directive: Directive, entertext: str) -> Directive:
    """The directive that applies to this prompt: ``on_correction`` after the gateway's correction,
    else one ``after_tool`` level per tool result after the directive's line."""
    fields = directive.fields
    marker = entertext.rfind(MARKER)
    tail = entertext[marker:] if marker >= 0 else entertext
    fix = fields.get("on_correction")
    if _CORRECTION in tail and isinstance(fix, dict):
        return Directive(json.dumps(fix), fix)
    for _ in _TOOL_RESULT.finditer(tail):
        after = fields.get("after_tool")
        if not isinstance(after, dict):
            break
        fields = after
    return directive if fields is directive.fields else Directive(json.dumps(fields), fields)


_NEXT_BLOCK = re.compile(r"\n\n(?:System|User|Assistant|Tool|Output|Correction)(?: \([^)\n]*\))?: ")


def last_tool_result(entertext: str) -> str:
    """The text of the last ``Tool (…): …`` block of a prompt ("" if none)."""
    starts = list(_TOOL_RESULT.finditer(entertext))
    if not starts:
        return ""
    head = entertext.find("): ", starts[-1].end())
    if head < 0:
        return ""
    end = _NEXT_BLOCK.search(entertext, head)
    return entertext[head + 3 : end.start() if end else len(entertext)]


def tool_pieces(fields: dict[str, Any]) -> list[str] | None:
    """The answer of a directive with ``call``, in pieces; None without one."""
    spec = fields.get("call")
    if spec is None:
        return None
    calls = spec if isinstance(spec, list) else [spec]
    style = fields.get("call_style", "plain")
    blocks = []
    for call in calls:
        body = json.dumps(call)
        if style == "fence_json":
            body = f"\n```json\n{json.dumps(call, indent=2)}\n```\n"
        elif style == "broken":
            body = json.dumps(call, indent=1).replace("\n}", ",\n}").replace("\n]", ",\n]")
        elif style == "garbage":
            body = "{name: " + str(call.get("name")) + ", arguments: ???"
        blocks.append(f"<tool_call>{body}" + ("" if style == "unclosed" else "</tool_call>"))
    markup = "\n".join(blocks)
    if style == "in_code":
        markup = f"```\n{markup}\n```"
    text = (fields.get("prose") or "") + markup + (fields.get("after_text") or "")
    if fields.get("split") == "chars":
        return list(text)
    cuts = sorted({0, len(text), *(i + k for i in _tag_starts(text) for k in (3, 8) if i + k < len(text))})
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


_TOOL_ENTRY = re.compile(r"^- ([^\s:]+)(?::[^\n]*)?\n(?:[^\n]*\n)*?  arguments: (\{[^\n]*\})$", re.M)
_MUST_CALL = re.compile(r"you must call (?:the tool (\S+?)\.|at least one tool)")
_OUTPUT = "\n\nOutput: answer with exactly one JSON "


def compliant_pieces(entertext: str) -> list[str] | None:
    """A minimal answer that obeys a prompt demanding a call or JSON (None: nothing demanded)."""
    must = _MUST_CALL.search(entertext)
    if must is not None:
        tools = {m.group(1): m.group(2) for m in _TOOL_ENTRY.finditer(entertext)}
        name = must.group(1) or next(iter(tools), None)
        if name is not None and name in tools:
            try:
                schema = json.loads(tools[name])
            except ValueError:
                schema = {}
            return [f"<tool_call>{json.dumps({'name': name, 'arguments': instance(schema)})}</tool_call>"]
    at = entertext.rfind(_OUTPUT)
    if at >= 0:
        schema_at = entertext.find("JSON Schema: ", at)
        try:
            schema = json.loads(entertext[schema_at + 13 :].split("\n", 1)[0]) if schema_at >= 0 else {}
        except ValueError:
            schema = {}
        value = instance(schema)
        return [json.dumps(value if isinstance(value, dict) or schema else {})]
    return None


def instance(schema: Any, depth: int = 0) -> Any:
    """A small value valid against simple schemas (type, enum, const, required, minimum, items)."""
    if not isinstance(schema, dict) or depth > 8:
        return {}
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return instance(schema[key][0], depth + 1)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return low if isinstance(low, (int, float)) else 0
    if kind == "string":
        return "x" * (schema.get("minLength", 1) if isinstance(schema.get("minLength"), int) else 1)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [instance(schema.get("items"), depth + 1) for _ in range(count)]
    props = p if isinstance(p := schema.get("properties"), dict) else {}
    required = r if isinstance(r := schema.get("required"), list) else []
    return {name: instance(props.get(name), depth + 1) for name in required if isinstance(name, str)}


def _tag_starts(text: str) -> list[int]:
    return [m.start() for m in re.finditer(r"</?tool_call>", text)]


def _event(piece: str) -> bytes:
    try:  # raw UTF-8, U+2028 included, as a JavaScript server sends it
        payload = orjson.dumps({"data": piece, "status": "running"})
    except TypeError:  # lone surrogates, which orjson refuses and json escapes
        payload = json.dumps({"data": piece, "status": "running"}).encode()
    return b"data: " + payload + b"\n\n"


def raw_frames(directive: Directive) -> list[bytes] | None:
    """The ``raw`` directive's writes as bytes (one char per byte, U+0000..U+00FF), or None."""
    raw = directive.fields.get("raw")
    if not isinstance(raw, list) or not all(isinstance(w, str) for w in raw):
        return None
    try:
        return [w.encode("latin-1") for w in raw]
    except UnicodeEncodeError:
        return None  # a char above U+00FF is no byte: treated as no raw directive


def encode_frames(directive: Directive, entertext: str) -> tuple[list[bytes], bytes]:
    """Pre-encoded SSE bytes: one frame per piece, and the end frame."""
    if (raw := raw_frames(directive)) is not None:
        return raw, END_FRAME
    frames = [_event(p) for p in answer_pieces(directive, entertext)]
    if directive.fields.get("malformed") is not True:
        return frames, END_FRAME
    return [JUNK[i % len(JUNK)] + f for i, f in enumerate(frames)], JUNK[len(frames) % len(JUNK)] + END_FRAME


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/form-data body (RFC 7578); file parts stay bytes."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise Invalid("Content-Type must be multipart/form-data with a boundary")
    # Every delimiter is CRLF--boundary; the CRLF put in front lets the first one match.
    sections = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    parts: list[Part] = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            return parts
        line_end = section.find(b"\r\n")  # the rest of the delimiter line may be blanks
        if line_end < 0 or section[:line_end].strip(b" \t"):
            raise Invalid("malformed multipart delimiter line")
        parts.append(_parse_part(section[line_end + 2 :]))
    raise Invalid("multipart body has no closing delimiter")


def _parse_part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n"):  # a part without headers
        head, data = b"", raw[2:]
    else:
        head, sep, data = raw.partition(b"\r\n\r\n")
        if not sep:
            raise Invalid("multipart part without a blank line after its headers")
    headers = BytesHeaderParser().parsebytes(head)
    name = headers.get_param("name", header="content-disposition")
    if headers.get_content_disposition() != "form-data" or not isinstance(name, str):
        raise Invalid("multipart part without Content-Disposition: form-data; name=...")
    ctype = headers.get("content-type")
    return Part(name, headers.get_filename(), str(ctype).strip() if ctype else None, data)


def _check_headers(headers: dict[str, str]) -> None:
    if headers.get("origin") != "https://decopy.ai":
        raise Invalid("Origin header must be https://decopy.ai")
    if not headers.get("product-code"):
        raise Invalid("missing product-code header")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", headers.get("product-serial", "")):
        raise Invalid("product-serial header must be 32 hex digits")


def _text(form: dict[str, Part], name: str) -> str:
    part = form.get(name)
    if part is None:
        raise Invalid(f"missing form field '{name}'")
    if part.filename is not None:
        raise Invalid(f"form field '{name}' must be a plain field, not a file")
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"form field '{name}' is not valid UTF-8") from None


def _image(part: Part) -> ImageInfo:
    match = IMAGE_NAME_RE.fullmatch(part.filename or "")
    if match is None:
        raise Invalid("upload_images needs the filename image.<png|jpeg|jpg|gif|webp>")
    ext, data = match.group(1), part.data
    if part.content_type != f"image/{ext}":
        raise Invalid(f"upload_images content type must be image/{ext}")
    magic = {
        "png": data[:8] == b"\x89PNG\r\n\x1a\n",
        "gif": data[:4] == b"GIF8",
        "webp": data[:4] == b"RIFF" and data[8:12] == b"WEBP",
    }
    if not magic.get(ext, data[:3] == b"\xff\xd8\xff"):  # catches e.g. bytes still in base64
        raise Invalid(f"upload_images is not a {ext} image")
    return ImageInfo(match.group(0), part.content_type, len(data), hashlib.sha256(data).hexdigest())


def build_job(
    parts: list[Part],
    headers: dict[str, str],
    entry: LogEntry,
    default: Directive | None = None,
    persona: Callable[[str, str], list[str]] | None = None,
) -> Job:
    """Validate a create-job request as a strict server would; log what it carried."""
    form: dict[str, Part] = {}
    for part in parts:
        if part.name in form:
            raise Invalid(f"duplicate form field '{part.name}'")
        form[part.name] = part
    for name in ("entertext", "model", "chat_id"):  # logged even when invalid, for debugging
        if name in form:
            setattr(entry, name, form[name].data.decode("utf-8", "replace"))
    image_part = form.get("upload_images")
    entry.image = image = _image(image_part) if image_part is not None else None
    _check_headers(headers)
    entertext, chat_id, model = _text(form, "entertext"), _text(form, "chat_id"), _text(form, "model")
    _text(form, "chat_group")  # required, may be empty
    if not entertext.strip():
        raise Invalid("entertext is empty")
    if not UUID4_RE.fullmatch(chat_id):
        raise Invalid("chat_id must be a UUID4")
    if model not in MODELS:
        raise Invalid(f"unsupported model '{model}'")
    directive = parse_directive(entertext)
    if not directive.fields and default is not None:
        directive = default
    if not directive.fields and persona is not None:  # paced so a person sees the answer stream
        directive = Directive(fields={"interval_ms": 15})
        frames, end = [_event(p) for p in persona(entertext, model)], END_FRAME
    else:
        frames, end = encode_frames(directive, entertext)
    image_bytes = image_part.data if image_part is not None else None
    return Job(secrets.token_hex(16), entertext, model, chat_id, headers, image, image_bytes, directive, frames, end)


def decopy_json(
    code: int, result: Any, en: str, zh: str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """decopy's JSON envelope: ``code`` 100000 is success, anything else a failure."""
    body = {"code": code, "result": result, "message": {"zh": zh, "en": en}}
    return Response(orjson.dumps(body), status, headers, "application/json")


def _refuse(exc: Invalid, entry: LogEntry) -> Response:
    entry.error = str(exc)
    entry.finish("invalid", 200)
    return decopy_json(100400, None, str(exc), "参数错误")


def failure_response(mode: str) -> Response | None:
    """The canned answer of an HTTP-level failure mode (None: not one)."""
    if mode in ("cloudflare", "cloudflare503"):
        cf = {"cf-mitigated": "challenge"} if mode == "cloudflare" else {}
        return Response(CF_HTML, 403 if cf else 503, {**cf, "cf-ray": secrets.token_hex(8)}, HTML)
    canned: dict[str, Callable[[], Response]] = {
        "429": lambda: decopy_json(100429, None, "Too many requests", "请求过于频繁", 429, {"retry-after": "1"}),
        "500": lambda: PlainTextResponse("Internal Server Error", 500),
        "502": lambda: Response(b"<html><head><title>502 Bad Gateway</title></head></html>", 502, None, HTML),
        "code": lambda: decopy_json(100500, None, "Service busy, please try again later", "服务繁忙，请稍后再试"),
        "html200": lambda: Response(b"<!DOCTYPE html><html><body>Decopy AI</body></html>", 200, None, HTML),
    }
    return canned[mode]() if mode in canned else None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message["type"] == "http.request" and message.get("more_body", False)
    return b"".join(chunks)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_watched(receive: Receive, work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` while watching for the client leaving; True if it left first.

    The watcher is its own task, so a disconnect is seen at once even while
    ``work`` sleeps between pieces; ``work`` is then cancelled.
    """
    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left = not task.done()
        task.cancel()
        watcher.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not left:
        task.result()  # surface a crash of the work itself
    return left


def cut_connection(scope: Scope) -> bool:
    """Abort the TCP connection serving ``scope``; False if it cannot be found.

    Finds uvicorn's protocol object for this request (it holds the same scope
    dict) and aborts its transport: the client sees the socket close, nothing
    (more) sent. Works for uvicorn's httptools and h11 protocols alike.
    """
    state: SimState = scope["app"].state.sim
    for conn in state.connections() if state.connections else ():
        if getattr(conn, "scope", None) is scope or getattr(conn, "client", 0) == scope.get("client"):
            conn.transport.abort()
            return True
    return False


async def _fail(mode: str, scope: Scope, receive: Receive, send: Send, entry: LogEntry) -> None:
    if mode == "drop":
        entry.finish("failed:drop")
        if cut_connection(scope):
            return await _until_disconnect(receive)  # uvicorn then sees the loss: no error logged
        # Fallback without uvicorn's connections (TestClient): a body that never comes.
        return await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
    response = failure_response(mode)
    if response is None:  # a typo in a test must not pass as a success
        entry.error = f"unknown {entry.kind}_fail mode {mode!r}"
        response, mode = PlainTextResponse(f"decopy_sim: {entry.error}", 400), "sim_error"
    entry.finish(mode if mode == "sim_error" else f"failed:{mode}", response.status_code)
    await response(scope, receive, send)


async def _hang(directive: Directive, receive: Receive, entry: LogEntry) -> bool:
    """Sleep ``hang_ms``; True (entry finished) if the client left meanwhile."""
    if left := await run_watched(receive, asyncio.sleep(directive.seconds("hang_ms", 60_000))):
        entry.client_closed = True
        entry.finish("failed:hang")
    return left


class RawEndpoint:
    """Lets Starlette route to a plain ASGI callable (it wraps functions otherwise)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


async def create_job(scope: Scope, receive: Receive, send: Send) -> None:
    state: SimState = scope["app"].state.sim
    headers, body = dict(Headers(scope=scope)), await _read_body(receive)
    entry = LogEntry("create", None, headers, time.time())
    state.log.append(entry)
    try:
        parts = parse_multipart(headers.get("content-type", ""), body)
        job = build_job(parts, headers, entry, state.default, state.persona)
    except Invalid as exc:
        return await _refuse(exc, entry)(scope, receive, send)
    mode = state.failure("create", job.directive)
    if mode == "hang" and await _hang(job.directive, receive, entry):
        return
    if mode == "nojobid":
        entry.finish("failed:nojobid", 200)
        return await decopy_json(100000, {}, "success", "成功")(scope, receive, send)
    if mode not in (None, "hang"):
        return await _fail(mode, scope, receive, send, entry)
    state.add_job(job)
    entry.job_id = job.job_id
    entry.finish("ok" if mode is None else "failed:hang", 200)
    # Cloudflare in front of decopy sets its bot-management cookie on answers; a client is to send
    # it back. (Real ones are also ``Secure``; the simulator is served over plain http.)
    cookie = {"set-cookie": f"__cf_bm={secrets.token_hex(16)}; path=/; HttpOnly; SameSite=None"}
    answer = decopy_json(100000, {"job_id": job.job_id}, "success", "成功", headers=cookie)
    split_ms = job.directive.num("split_ms", 0)
    if not split_ms:
        return await answer(scope, receive, send)
    body, third = bytes(answer.body), max(1, len(answer.body) // 3)
    await send({"type": "http.response.start", "status": 200, "headers": answer.raw_headers})
    for i in range(0, len(body), third):
        await send({"type": "http.response.body", "body": body[i : i + third], "more_body": True})
        await asyncio.sleep(split_ms / 1000)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def get_job(scope: Scope, receive: Receive, send: Send) -> None:
    state: SimState = scope["app"].state.sim
    job_id, headers = scope["path_params"]["job_id"], dict(Headers(scope=scope))
    job = state.jobs.get(job_id)
    entry = LogEntry("stream", job_id, headers, time.time())
    if job is not None:
        entry.entertext, entry.model, entry.chat_id, entry.image = job.entertext, job.model, job.chat_id, job.image
    state.log.append(entry)
    try:
        _check_headers(headers)
    except Invalid as exc:
        return await _refuse(exc, entry)(scope, receive, send)
    if job is None:
        entry.finish("unknown_job", 200)
        return await decopy_json(100404, None, "Job not found or expired", "任务不存在或已过期")(scope, receive, send)
    mode = state.failure("stream", job.directive)
    if mode == "hang" and await _hang(job.directive, receive, entry):
        return
    if mode not in STREAM_MODES:
        return await _fail(mode, scope, receive, send, entry)
    entry.status = 200
    if await run_watched(receive, _stream(job, mode, scope, send, entry)):
        entry.client_closed = True
        entry.finish("client_closed" if mode in (None, "hang") else f"failed:{mode}")


async def _stream(job: Job, mode: str | None, scope: Scope, send: Send, entry: LogEntry) -> None:
    directive, frames = job.directive, job.frames
    interval = directive.seconds("interval_ms", 5)
    first = directive.seconds("first_ms", directive.num("interval_ms", 5))
    after = directive.num("truncate_after" if mode == "truncate" else "after", 3)
    stop = min(after, len(frames)) if mode in ("truncate", "cut") else len(frames)
    close = [(b"connection", b"close")] if mode == "truncate" else []
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + close})
    for i in range(stop + 1):
        if mode == "hang_after" and i == min(after, stop):
            await asyncio.sleep(directive.seconds("hang_ms", 60_000))
        if i == stop:
            break
        if delay := first if i == 0 else interval:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": frames[i], "more_body": True})
        entry.pieces_sent = i + 1
    if mode == "cut":
        # No await until the return, so run_watched sees the work done before the
        # disconnect. Without uvicorn's connections, returning with the body
        # unfinished makes uvicorn close the connection (and log an error).
        cut_connection(scope)
        return entry.finish("failed:cut")
    entry.finish("ok" if mode is None else f"failed:{mode}")
    await send({"type": "http.response.body", "body": b"" if mode == "truncate" else job.end_frame})


async def sim_log(request: Request) -> Response:
    return Response(orjson.dumps(request.app.state.sim.log), media_type="application/json")


async def sim_reset(request: Request) -> Response:
    request.app.state.sim.reset()
    return Response(b'{"ok":true}', media_type="application/json")


async def sim_default(request: Request) -> Response:
    raw = (await request.body()).decode("utf-8", "replace").strip() or "{}"
    try:
        fields = json.loads(raw)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        return PlainTextResponse("decopy_sim: the default must be a JSON object", 400)
    directive = Directive(raw if fields else "", fields)
    request.app.state.sim.set_default(directive)
    return Response(orjson.dumps({"default": directive.fields}), media_type="application/json")


async def sim_health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(state: SimState | None = None) -> Starlette:
    """The simulator as an ASGI app; its state lives in ``app.state.sim``."""
    app = Starlette(
        routes=[
            Route("/api/decopy/ask-ai/create-job", RawEndpoint(create_job), methods=["POST"]),
            Route("/api/decopy/ask-ai/get-job/{job_id}", RawEndpoint(get_job), methods=["GET"]),
            Route("/_sim/log", sim_log),
            Route("/_sim/reset", sim_reset, methods=["POST"]),
            Route("/_sim/default", sim_default, methods=["POST"]),
            Route("/_sim/health", sim_health),
        ]
    )
    app.state.sim = state or SimState()
    return app


class SimServer(uvicorn.Server):
    """uvicorn server that announces its URL and exits 0 on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(f"SIM_READY {self.url}", flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Streams may hang for a minute by design: cut every connection, so each
        # handler sees a disconnect and ends at once, instead of uvicorn waiting
        # and then cancelling them with tracebacks in the log.
        for conn in list(self.server_state.connections):
            conn.transport.abort()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's version re-raises the signal after the graceful shutdown, which
        # ends the process with status -15 or a KeyboardInterrupt traceback.
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="decopy.ai protocol simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--certfile", help="serve https with this certificate (PEM)")
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")
    parser.add_argument("--demo", action="store_true", help="answer requests without a directive like a model")
    args = parser.parse_args(argv)
    family, kind, proto, _, addr = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)  # bound here, so --port 0 has a known port before uvicorn starts
    host, port = sock.getsockname()[:2]
    app = create_app()
    if args.demo:
        from tests.sim_persona import answer

        app.state.sim.persona = answer
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        headers=[("server", "cloudflare")],
        timeout_graceful_shutdown=1,  # hanging streams must not hold up the shutdown
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
    )
    scheme = "https" if args.certfile else "http"
    server = SimServer(config, f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}")
    app.state.sim.connections = lambda: server.server_state.connections
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
