"""Each key's weight in the fair queue: how large its share of a saturated upstream is.

The fair queue (``shared.queue``) gives every key that has jobs waiting a share of the workers
and the upstream in proportion to its weight (1 unless set). The master key and the dashboard
count as keys of their own (ids ``master`` and ``dashboard``). Weights live in one Redis hash
(``shared.names.FQ_WEIGHTS``) that the claim script reads, so a change applies to the next job
taken, on every replica. Admin routes: ``GET /admin/weights``, ``PUT`` / ``DELETE
/admin/weights/{key_id}``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.http.body import read_json
from api.http.responses import JSONBody
from api.tenancy.keys import KeyStore, redis_errors
from shared import names
from shared.errors import InvalidRequest, NotFound

DEFAULT_WEIGHT = 1.0
MAX_WEIGHT = 1000.0
#: Callers that are not team keys but share the queue as keys do.
BUILTIN = {"master": "master key", "dashboard": "dashboard"}


class WeightBody(BaseModel):
    """The body of ``PUT /admin/weights/{key_id}`` (its schema for the OpenAPI document)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(gt=0, le=MAX_WEIGHT)


def parse_weight(body: Any) -> float:
    """The ``weight`` of a request body: a number above 0 and at most :data:`MAX_WEIGHT`; 400 otherwise."""
    if not isinstance(body, dict) or set(body) != {"weight"}:
        raise InvalidRequest('The body must be {"weight": <number>}.', param="weight", code="invalid_value")
    weight = body["weight"]
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise InvalidRequest("Invalid 'weight': must be a number.", param="weight", code="invalid_value")
    if not 0 < weight <= MAX_WEIGHT:
        raise InvalidRequest(
            f"Invalid 'weight': must be above 0 and at most {MAX_WEIGHT:g}.", param="weight", code="invalid_value"
        )
    return float(weight)


async def all_weights(redis: Redis) -> list[dict[str, Any]]:
    """The master key, the dashboard and every team key, with their weights."""
    records = await KeyStore(redis).list_all()
    async with redis_errors():
        raw = await redis.hgetall(names.FQ_WEIGHTS)  # type: ignore[misc]
    set_ = {k.decode(): float(v) for k, v in raw.items()}
    rows = [(key_id, name) for key_id, name in BUILTIN.items()] + [(r.id, r.name) for r in records]
    return [{"key_id": i, "name": n, "weight": set_.get(i, DEFAULT_WEIGHT)} for i, n in rows]


async def _known(request: Request, key_id: str) -> None:
    if key_id in BUILTIN:
        return
    async with redis_errors():
        exists = await request.app.state.redis.exists(names.key_by_id(key_id))
    if not exists:
        raise NotFound(f"No key with id '{key_id}'.", param="key_id", code="key_not_found")


async def list_weights(request: Request) -> Response:
    return JSONBody({"object": "list", "data": await all_weights(request.app.state.redis)})


async def set_weight(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    weight = parse_weight(await read_json(request, 4096))
    await _known(request, key_id)
    async with redis_errors():
        await request.app.state.redis.hset(names.FQ_WEIGHTS, key_id, repr(weight))
    return JSONBody({"key_id": key_id, "weight": weight})


async def reset_weight(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    await _known(request, key_id)
    async with redis_errors():
        await request.app.state.redis.hdel(names.FQ_WEIGHTS, key_id)
    return JSONBody({"key_id": key_id, "weight": DEFAULT_WEIGHT})


routes = [
    Route("/admin/weights", list_weights, methods=["GET"]),
    Route("/admin/weights/{key_id}", set_weight, methods=["PUT"]),
    Route("/admin/weights/{key_id}", reset_weight, methods=["DELETE"]),
]
