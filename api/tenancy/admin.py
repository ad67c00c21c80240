"""Admin routes (master key only, checked by :class:`api.http.middleware.AuthMiddleware`): team keys and usage.

Thin: parse, call :mod:`api.tenancy.keys` / :mod:`api.tenancy.usage` (the functions the CLI uses too), map the
result. Errors are GatewayErrors, rendered in OpenAI's shape by the app.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.http.body import read_json
from api.http.responses import JSONBody
from api.tenancy.keys import KeyStore, parse_new_key
from api.tenancy.usage import keys_with_usage, usage_report
from shared.errors import NotFound

_MAX_BODY = 64 * 1024


async def create_key(request: Request) -> Response:
    new = parse_new_key(await read_json(request, _MAX_BODY))
    keys: KeyStore = request.app.state.keys
    record, secret = await keys.create(new)
    return JSONBody({"id": record.id, "key": secret, **record.public()}, status_code=201)


async def list_keys(request: Request) -> Response:
    return JSONBody({"object": "list", "data": await keys_with_usage(request.app.state.redis)})


async def revoke_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    keys: KeyStore = request.app.state.keys
    if not await keys.revoke(key_id):
        raise NotFound(f"No key with id '{key_id}'.", param="id", code="key_not_found")
    return JSONBody({"id": key_id, "deleted": True})


async def usage(request: Request) -> Response:
    return JSONBody({"object": "list", "data": await usage_report(request.app.state.redis)})


routes = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/usage", usage, methods=["GET"]),
]
