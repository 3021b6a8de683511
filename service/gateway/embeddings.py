"""``POST /v1/embeddings``: routed by ``model`` to the route's OpenAI-wire providers.

Through the same chain as chat (breakers, cooldowns, connection slots, fallbacks), narrowed
to the providers that speak Chat Completions' family of endpoints: Anthropic has no
embeddings API, so a route with none of those answers a 400 that says so.  The body goes as
received with ``model`` rewritten; the answer comes back as received (``model`` renamed
where the route aliases it).
"""

from __future__ import annotations

from aiohttp import web

from service.gateway.core import (
    POLICY,
    RouteOf,
    json_answer,
    note,
    passed_through,
    post_json,
    read_fields,
    rename_model,
    speaks_anthropic,
    string_field,
    upstream_error,
    with_model,
)
from service.http import Problem
from service.llm.chain import Link
from service.llm.errors import APIError


def _serves_embeddings(link: Link) -> bool:
    return not speaks_anthropic(link)


async def handle(route_of: RouteOf, request: web.Request) -> web.Response:
    fields = await read_fields(request)
    route = route_of(string_field(fields, "model"))
    note(request, route, None)  # the access log and metrics name the route, failures included
    if "input" not in fields:
        raise Problem(400, "input: required", param="input")
    links = [link for link in route.client.chain.links if _serves_embeddings(link)]
    if not links:
        raise Problem(
            400,
            f"model {route.name!r} has no provider that serves embeddings (its providers speak "
            "the Anthropic Messages API, which has none)",
            code="embeddings_unsupported",
            param="model",
        )
    models = route.models()
    transport = route.client.sessions.get()

    async def attempt(link: Link) -> bytes:
        upstream = models[link]
        payload, _ = await post_json(transport, link, "/embeddings", with_model(fields, upstream))
        return rename_model(payload, route.name) if route.aliased(upstream) else payload

    try:
        payload, link = await route.client.chain.call(attempt, POLICY, links)
    except APIError as exc:
        if passed_through(exc, route, _serves_embeddings):
            return upstream_error(exc)
        raise
    note(request, route, link)
    return json_answer(payload, link)
