"""Circuit-breaker transports for httpx (the ``[httpx]`` extra), async and sync.

::

    from service.integrations.httpx import AsyncCircuitBreakerTransport, CircuitBreakerTransport

    async with httpx.AsyncClient(transport=AsyncCircuitBreakerTransport(max_idle=600.0)) as c:
        response = await c.get("https://api.example.com/v1/things")

    with httpx.Client(transport=CircuitBreakerTransport()) as client:
        response = client.get("https://api.example.com/v1/things")

Each wraps another transport (default: httpx's own ``AsyncHTTPTransport`` /
``HTTPTransport``) and guards every request with the breaker of its key, with the rules of
:mod:`service.integrations.rules`; the sync one mirrors the async one.  A rejected request
raises :class:`~actors.errors.CircuitBreakerOpenError` before the inner transport is called.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from actors.config import CircuitBreakerConfig
from actors.system import ActorSystem
from service.integrations.rules import (
    MAX_RETRY_AFTER,
    HttpBreakers,
    StatusMarker,
    UpstreamStatus,
)

__all__ = ["AsyncCircuitBreakerTransport", "CircuitBreakerTransport", "origin"]


def origin(url: httpx.URL) -> str:
    """The default key: ``scheme://host:port`` (the port filled in from the scheme)."""
    port = url.port if url.port is not None else {"http": 80, "https": 443}.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"


def is_failure(exc: BaseException) -> bool:
    """What counts against an upstream's breaker: a failing status, or a transport error
    (connection errors and timeouts among them)."""
    return isinstance(exc, UpstreamStatus | httpx.TransportError)


def _breakers(
    key: Callable[[httpx.URL], str],
    system: ActorSystem | None,
    config: CircuitBreakerConfig | None,
    count_429: bool,
    max_retry_after: float,
    max_idle: float | None,
    max_breakers: int | None,
) -> HttpBreakers[httpx.URL]:
    return HttpBreakers(
        key=key,
        is_failure=is_failure,
        system=system,
        config=config,
        count_429=count_429,
        max_retry_after=max_retry_after,
        max_idle=max_idle,
        max_breakers=max_breakers,
    )


class AsyncCircuitBreakerTransport(httpx.AsyncBaseTransport):
    """Guards each request of an ``httpx.AsyncClient``; arguments as for
    :class:`service.integrations.aiohttp.CircuitBreakerMiddleware`, plus ``transport``."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        key: Callable[[httpx.URL], str] = origin,
        system: ActorSystem | None = None,
        config: CircuitBreakerConfig | None = None,
        count_429: bool = False,
        max_retry_after: float = MAX_RETRY_AFTER,
        max_idle: float | None = None,
        max_breakers: int | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.breakers = _breakers(
            key, system, config, count_429, max_retry_after, max_idle, max_breakers
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        breakers = self.breakers
        name, breaker = breakers.breaker(request.url)
        breakers.check_hold(name)
        try:
            async with breaker.guarded_async():  # raises before the transport when rejected
                response = await self.transport.handle_async_request(request)
                breakers.raise_for_status(response.status_code)
        except StatusMarker as marker:
            breakers.settle(name, breaker, marker, response.headers)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


class CircuitBreakerTransport(httpx.BaseTransport):
    """The sync mirror of :class:`AsyncCircuitBreakerTransport`, for ``httpx.Client``."""

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        key: Callable[[httpx.URL], str] = origin,
        system: ActorSystem | None = None,
        config: CircuitBreakerConfig | None = None,
        count_429: bool = False,
        max_retry_after: float = MAX_RETRY_AFTER,
        max_idle: float | None = None,
        max_breakers: int | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self.breakers = _breakers(
            key, system, config, count_429, max_retry_after, max_idle, max_breakers
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        breakers = self.breakers
        name, breaker = breakers.breaker(request.url)
        breakers.check_hold(name)
        try:
            with breaker.guarded():  # raises before the transport when rejected
                response = self.transport.handle_request(request)
                breakers.raise_for_status(response.status_code)
        except StatusMarker as marker:
            breakers.settle(name, breaker, marker, response.headers)
        return response

    def close(self) -> None:
        self.transport.close()
