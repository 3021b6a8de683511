"""A circuit-breaker middleware for aiohttp clients (aiohttp >= 3.12).

::

    from service.integrations.aiohttp import CircuitBreakerMiddleware

    breakers = CircuitBreakerMiddleware(max_idle=600.0, max_breakers=10_000)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        async with session.get("https://api.example.com/v1/things") as response:
            ...

Every request goes through the breaker of its key (default ``scheme://host:port``), which
the middleware creates on first use; the rules are those of
:mod:`service.integrations.rules`.  A rejected request raises
:class:`~actors.errors.CircuitBreakerOpenError` and opens no connection.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from yarl import URL

from actors.config import CircuitBreakerConfig
from actors.system import ActorSystem
from service.integrations.rules import (
    MAX_RETRY_AFTER,
    HttpBreakers,
    StatusMarker,
    UpstreamStatus,
)

__all__ = ["CircuitBreakerMiddleware", "origin"]


def origin(url: URL) -> str:
    """The default key: ``scheme://host:port`` (the port filled in from the scheme)."""
    return f"{url.scheme}://{url.host}:{url.port}"


def is_failure(exc: BaseException) -> bool:
    """What counts against an upstream's breaker: a failing status, a connection error, a
    timeout (``ServerTimeoutError`` is both)."""
    return isinstance(exc, UpstreamStatus | aiohttp.ClientConnectionError | TimeoutError)


class CircuitBreakerMiddleware:
    """Guards each request of a ``ClientSession`` with the breaker of its key.

    ``key``: a callable of the request's ``yarl.URL`` returning the breaker's name (default
    :func:`origin`).  ``system``: where the breakers live (default: the process-wide one).
    ``config``: their configuration (its ``is_failure`` is replaced by the integration's).
    ``count_429``: count 429 as a failure (ignored by default).  ``max_retry_after``: the
    longest ``Retry-After`` on a 503 that extends a break.  ``max_idle`` / ``max_breakers``:
    turn on eviction in ``system`` (see ``actors.eviction``).
    """

    def __init__(
        self,
        *,
        key: Callable[[URL], str] = origin,
        system: ActorSystem | None = None,
        config: CircuitBreakerConfig | None = None,
        count_429: bool = False,
        max_retry_after: float = MAX_RETRY_AFTER,
        max_idle: float | None = None,
        max_breakers: int | None = None,
    ) -> None:
        self.breakers: HttpBreakers[URL] = HttpBreakers(
            key=key,
            is_failure=is_failure,
            system=system,
            config=config,
            count_429=count_429,
            max_retry_after=max_retry_after,
            max_idle=max_idle,
            max_breakers=max_breakers,
        )

    def __repr__(self) -> str:
        return f"<CircuitBreakerMiddleware system={self.breakers.system.name!r}>"

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        breakers = self.breakers
        name, breaker = breakers.breaker(request.url)
        breakers.check_hold(name)
        try:
            async with breaker.guarded_async():  # raises before the handler when rejected
                response = await handler(request)
                breakers.raise_for_status(response.status)
        except StatusMarker as marker:
            breakers.settle(name, breaker, marker, response.headers)
        return response
