"""Read one upstream answer of a job with tools or a JSON output format, as the client must get it.

:class:`AnswerReader` is pure (no I/O): the worker feeds it the upstream's text delta by delta
and publishes the actions it returns, ``("text", s)`` and ``("call", ToolCall)``, in order. It
decides, per the job's choices:

- **auto**: text before a call goes out at once; each call goes out once whole and valid
  (repaired if need be, see :mod:`shared.tools.repair`); text after the last call is dropped.
- **required** or a **named** tool, and a **JSON output** format: the text is held until a valid
  call comes (then it goes out before it) or the answer ends; a JSON answer is extracted and
  checked (:mod:`shared.tools.jsonout`) before it goes out.
- **parallel_tool_calls false**: the first valid call ends the answer (:attr:`done`).
- **none**: no tool is offered, so any call is invalid.

A call that cannot be passed on (not JSON, an unknown tool, arguments against the schema), an
answer without the required call, or a JSON answer that fails its check raises :class:`Retry`
when nothing has gone out yet and the job has not been corrected before: the worker asks the
upstream again with the correction appended to the prompt. Otherwise a bad call ends the answer
where it is (as the text already sent, and the calls already sent); an answer with nothing but
invalid calls, a missing required call or a bad JSON answer raises :class:`Refusal` with the
error the client gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NoReturn

from shared.errors import GatewayError, UpstreamError
from shared.messages import ChatJob, OutputFormat, ToolCall, ToolChoice
from shared.tools import jsonout
from shared.tools.convention import correction, offered
from shared.tools.parser import THINK_CLOSE, THINK_OPEN, CallParser, Piece
from shared.tools.repair import CallError, ToolBox

Action = tuple[Literal["text"], str] | tuple[Literal["call"], ToolCall]


class Retry(Exception):
    """Ask the upstream again with :attr:`correction` appended to the prompt."""

    def __init__(self, correction: str, reason: str) -> None:
        super().__init__(reason)
        self.correction = correction
        self.reason = reason


class Refusal(Exception):
    """The answer cannot be given as the client asked: end the job with :attr:`error`."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Emulation:
    """What a job asks of the answer: the tools it may call, the choice, the output format."""

    box: ToolBox
    choice: ToolChoice
    parallel: bool
    output: OutputFormat | None
    has_tools: bool

    @classmethod
    def of(cls, job: ChatJob) -> Emulation | None:
        """None for a plain job (no tools, no JSON output): it is streamed as it comes."""
        tools = job.get("tools") or []
        output = job.get("output")
        if output is not None and output["type"] == "text":
            output = None
        if not tools and output is None:
            return None
        choice = job.get("tool_choice", "auto")
        return cls(
            box=ToolBox(offered(tools, choice)),
            choice=choice,
            parallel=job.get("parallel_tool_calls", True),
            output=output,
            has_tools=bool(tools),
        )

    @property
    def call_required(self) -> bool:
        return self.has_tools and (self.choice == "required" or isinstance(self.choice, dict))

    @property
    def holds_text(self) -> bool:
        """Text waits for the end (or the first call): it may yet have to be retried or checked."""
        return self.call_required or self.output is not None


@dataclass
class Counts:
    """What one attempt did, for the metrics."""

    emitted: int = 0
    repaired: int = 0
    refused: int = 0
    json_valid: int = 0
    json_repaired: int = 0
    json_refused: int = 0
    problems: list[str] = field(default_factory=list)


class AnswerReader:
    """Reads one attempt's answer (see the module docstring). ``may_retry``: no correction yet."""

    def __init__(self, emulation: Emulation, *, may_retry: bool) -> None:
        self.emu = emulation
        self.may_retry = may_retry
        self.parser = CallParser()
        self.counts = Counts()
        self.calls: list[ToolCall] = []
        #: Something went out to the client (a retry is then no longer possible).
        self.sent = False
        #: The answer is over: stop reading the upstream.
        self.done = False
        self._held: list[str] = []

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"

    def feed(self, text: str) -> list[Action]:
        if self.done:
            return []
        return self._take(self.parser.feed(text))

    def end(self) -> list[Action]:
        """The upstream finished: the rest of the answer (raises Retry or Refusal as above)."""
        if self.done:
            return []
        out = self._take(self.parser.end())
        if self.done or self.calls:
            return out
        if self.emu.call_required:
            if not self.counts.problems:
                self.counts.refused += 1  # an answer without the required call is refused as well
            problem = self.counts.problems[-1] if self.counts.problems else "you called no tool"
            self._fail(
                f"{problem}, but this answer must call "
                + (f"the tool {self.emu.choice['name']}" if isinstance(self.emu.choice, dict) else "a tool"),
                "no_call",
                code="tool_call_missing",
                message="The model answered without the tool call that tool_choice requires"
                + (f" ({problem})" if self.counts.problems else "")
                + ", even after a correction.",
            )
        if self.counts.problems and not self.sent and not out:  # only invalid calls, even after a correction
            self._fail(
                self.counts.problems[-1],
                "call",
                code="invalid_tool_call",
                message=f"The model's tool call could not be used ({self.counts.problems[-1]}), "
                "even after a correction.",
            )
        if self.emu.output is not None:
            out += self._json_answer()
        elif self._held:
            out.append(("text", "".join(self._held)))
            self._held.clear()
        self.sent = self.sent or bool(out)
        return out

    # --- internals ------------------------------------------------------------------------

    def _take(self, pieces: list[Piece]) -> list[Action]:
        out: list[Action] = []
        for kind, value in pieces:
            if kind == "text":
                if self.emu.holds_text:
                    self._held.append(value)
                else:
                    out.append(("text", value))
                    self.sent = True
                continue
            try:
                call, repaired = self.emu.box.decode(value)
            except CallError as exc:
                self.counts.refused += 1
                self.counts.problems.append(str(exc))
                if self.may_retry and not self.sent and not out:
                    raise Retry(correction(str(exc)), "call") from None
                if self.sent or out:
                    self.done = True  # the answer ends here, as what went out so far
                    self.sent = True
                    return out
                continue  # nothing went out: a valid call may still follow; end() refuses the answer if none does
            self.counts.emitted += 1
            self.counts.repaired += int(repaired or kind == "open")
            if self._held:
                out.append(("text", "".join(self._held).strip()))
                self._held.clear()
                if not out[-1][1]:
                    out.pop()
            out.append(("call", call))
            self.calls.append(call)
            self.sent = True
            if not self.emu.parallel:
                self.done = True
                return out
        return out

    def _json_answer(self) -> list[Action]:
        output = self.emu.output
        assert output is not None
        text = "".join(self._held)
        self._held.clear()
        think = ""
        opened = text.lstrip()
        if opened.startswith(THINK_OPEN) and THINK_CLOSE in opened:  # the reasoning goes out as it was
            cut = opened.index(THINK_CLOSE) + len(THINK_CLOSE)
            think, text = opened[:cut], opened[cut:]
        try:
            answer, repaired = jsonout.check(text, output)
        except jsonout.OutputError as exc:
            self.counts.json_refused += 1
            self._fail(
                str(exc),
                "json",
                code="invalid_json_output",
                message=f"The model's answer is not the JSON asked for by the output format ({exc}), "
                "even after a correction.",
            )
        self.counts.json_valid += 1
        self.counts.json_repaired += int(repaired)
        return [("text", think + answer)]

    def _fail(self, problem: str, reason: str, *, code: str, message: str) -> NoReturn:
        if self.may_retry and not self.sent:
            raise Retry(correction(problem), reason)
        raise Refusal(UpstreamError(message, code=code))
