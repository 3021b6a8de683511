"""The gateway: routes built from the config, and its endpoints registered on the app.

The request's ``model`` picks a route; each route is one :class:`~service.llm.client.LLMClient`
whose chain is the route's provider and then its fallbacks, each provider behind its own
breaker (``<provider>_client`` in the registry, created here from its ``[breakers.*]`` table
with the LLM error policy) and its rate-limit cooldown.  Nobody answering is an error
status (503 with ``Retry-After`` and ``x-should-retry: false`` for open breakers, 429 with
the soonest ``Retry-After`` when every provider cools down), never an apology dressed up as
the model's answer.  Which provider answered is in the ``X-Breakerd-Provider`` header.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from actors.system import default_system
from service.circuit_breaker import get_circuit_breaker
from service.config import ServiceConfig
from service.gateway import chat, embeddings, messages, models
from service.gateway.core import Route
from service.gateway.providers import ProviderTarget
from service.http import Problem
from service.llm.cooldown import cooldown_for
from service.llm_client import get_llm_client, llm_breaker_config

logger = logging.getLogger("service.gateway")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _left(handler: Handler) -> Handler:
    """``handler``, logging a cancellation (the client left, or shutdown cut the request) at
    INFO: the upstream call was cancelled with it and its breaker counted it as ignored."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except asyncio.CancelledError:
            logger.info(
                "%s %s: cancelled (the client left); its upstream call was cancelled too",
                request.method,
                request.path,
            )
            raise

    return run


class Gateway:
    """Routes LLM requests to LLM clients.  Handlers run on the service's loop.

    Creating it creates every provider's breaker (so that ``GET /breakers`` lists them from
    the start) and one client per route.  Raises ``ValueError`` when a breaker of the same name
    already exists in the registry with another config.
    """

    def __init__(self, config: ServiceConfig, providers: Mapping[str, ProviderTarget]) -> None:
        self.config = config
        self.providers = dict(providers)
        for target in self.providers.values():
            get_circuit_breaker(
                f"{target.name}_client",
                llm_breaker_config(**config.breaker_settings(target.table)),
            )
        self.routes = {name: self._route(name) for name in config.routes}

    def __repr__(self) -> str:
        return f"<Gateway routes={sorted(self.routes)}>"

    def _options(self, name: str) -> dict[str, Any]:
        target, section = self.providers[name], self.config.providers[name]
        options: dict[str, Any] = {
            "provider": section.kind,
            "name": name,
            "model": section.model,
            "timeout": section.timeout,
            "connect_timeout": section.connect_timeout,
            "pool_size": section.pool_size,
            "pool_timeout": section.pool_timeout,
        }
        if target.api_key:
            options["api_key"] = target.api_key
        else:
            options["api_key_env"] = target.key_env  # named in the error at the first call
        if target.base_url:
            options["base_url"] = target.base_url
        return options

    def _route(self, name: str) -> Route:
        section = self.config.routes[name]
        fallbacks = []
        for fallback in section.fallbacks:
            if self.providers[fallback].usable:
                fallbacks.append(self._options(fallback))
            else:
                logger.warning(
                    "route %r: fallback provider %r has no API key (%s); the route runs without it",
                    name,
                    fallback,
                    self.providers[fallback].key_env,
                )
        primary = self.providers[section.provider]
        if not primary.usable:
            logger.warning(
                "route %r: provider %r has no API key (%s); its requests fail until it is set",
                name,
                section.provider,
                primary.key_env,
            )
        client = get_llm_client(
            fallback_providers=fallbacks,
            fallback_on_rate_limit=section.fallback_on_rate_limit,
            **self._options(section.provider),
        )
        return Route(name, client, section.model or name)

    def route(self, model: str) -> Route:
        """The route for a request's ``model``; a 404 naming the configured ones otherwise."""
        route = self.routes.get(model)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none configured"
            raise Problem(
                404,
                f"model {model!r} has no route; configured models: {known}",
                code="model_not_found",
                param="model",
            )
        return route

    def cooldown_remaining(self, provider: str) -> float:
        """Seconds left of ``provider``'s rate-limit cooldown (0.0 when none): readiness."""
        return cooldown_for(default_system(), f"{provider}_client").remaining()

    def add_routes(self, app: web.Application) -> None:
        """Register ``/v1/models``, ``/v1/embeddings`` and ``/v1/messages`` on ``app``
        (``/v1/chat/completions`` is :meth:`handle`, registered by ``create_app``)."""
        router = app.router
        route = self.route
        router.add_get("/v1/models", self._list_models)
        router.add_get("/v1/models/{id}", functools.partial(models.get_model, route))
        router.add_post("/v1/embeddings", _left(functools.partial(embeddings.handle, route)))
        router.add_post("/v1/messages", _left(functools.partial(messages.handle, route)))
        router.add_post(
            "/v1/messages/count_tokens", _left(functools.partial(messages.count_tokens, route))
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        return await _left(functools.partial(chat.handle, self.route))(request)

    async def _list_models(self, request: web.Request) -> web.Response:
        return models.list_models(self.routes, request)

    async def aclose(self) -> None:
        """Close every route's HTTP sessions."""
        for route in self.routes.values():
            await route.client.aclose()
