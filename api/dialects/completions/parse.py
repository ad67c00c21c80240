"""Turn a legacy completions body into the engine's :class:`ChatCall`: the prompt is one user turn.

What the upstream cannot do is refused with a 400 naming the field: ``suffix`` (fill in the
middle), ``echo``, ``logprobs``, ``best_of`` above 1, ``n`` above 1, and a list of more than one
prompt (one answer per request). ``stop`` and ``max_tokens`` are the gateway's, as for chat; no
default of 16 tokens is imposed (the models are chat models: an unset limit is no limit).
"""

from __future__ import annotations

from typing import Any

from api.dialects.bodies import parse_body, resolve_model
from api.dialects.completions.schema import CompletionRequest
from api.engine.call import ChatCall, finish_call
from shared.errors import InvalidRequest, Unsupported
from shared.models import ModelTable


def parse_completion(body: Any, models: ModelTable) -> ChatCall:
    req = parse_body(CompletionRequest, body, types_hint="a string prompt")
    if req.suffix:
        raise Unsupported("suffix is not supported: the upstream cannot fill in the middle.", param="suffix")
    if req.echo:
        raise Unsupported("echo is not supported: the answer never repeats the prompt.", param="echo")
    if req.logprobs is not None:
        raise Unsupported("logprobs are not supported: the upstream reports none.", param="logprobs")
    if req.best_of is not None and req.best_of > 1:
        raise Unsupported("best_of > 1 is not supported: the upstream returns one answer.", param="best_of")
    if req.n is not None and req.n > 1:
        raise Unsupported("n > 1 is not supported: the upstream returns one answer per request.", param="n")
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise Unsupported("prompt takes one string (or a list of one): one answer per request.", param="prompt")
        prompt = prompt[0]
    model = resolve_model(models, req.model)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    stop = [s for s in stop if s]
    if len(stop) > 4:
        raise InvalidRequest("stop takes at most 4 sequences.", param="stop", code="too_many_stop_sequences")
    include_usage = bool(req.stream and (req.stream_options or {}).get("include_usage"))
    call = ChatCall(
        model=model.id,
        upstream_model=model.upstream,
        turns=[{"role": "user", "text": prompt}],
        stream=bool(req.stream),
        dialect="completions",
        stop=stop,
        max_tokens=req.max_tokens,
        include_usage=include_usage,
    )
    return finish_call(call, param="prompt")
