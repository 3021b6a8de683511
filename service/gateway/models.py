"""``GET /v1/models`` and ``GET /v1/models/{id}``: the routes, as the SDKs list models.

The OpenAI list format by default (``{"object": "list", "data": [{"id", "object": "model",
"created", "owned_by"}]}``); a request that carries ``anthropic-version`` (the Anthropic SDK
sends it on every call) gets Anthropic's (``{"data": [{"id", "type": "model",
"display_name", "created_at"}], "has_more", "first_id", "last_id"}``).  Each route is one
model, whatever its providers: a client names the route, the gateway picks the provider.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from service.gateway.core import RouteOf
from service.http import json_response

#: ``created`` of every listed model (the routes have no creation date: the epoch, as
#: OpenAI-compatible servers without one commonly report).
_CREATED = 0
_CREATED_AT = "1970-01-01T00:00:00Z"


def _anthropic(request: web.Request) -> bool:
    return "anthropic-version" in request.headers


def _entry(name: str, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"id": name, "type": "model", "display_name": name, "created_at": _CREATED_AT}
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "breakerd"}


def list_models(names: Iterable[str], request: web.Request) -> web.Response:
    anthropic = _anthropic(request)
    data = [_entry(name, anthropic) for name in sorted(names)]
    if anthropic:
        return json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )
    return json_response({"object": "list", "data": data})


async def get_model(route_of: RouteOf, request: web.Request) -> web.Response:
    route = route_of(request.match_info["id"])  # the 404 when there is none
    return json_response(_entry(route.name, _anthropic(request)))
