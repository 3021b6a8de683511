"""Real upstreams for the HTTP-client integrations: aiohttp servers on 127.0.0.1, port 0."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import anyio
import pytest
from aiohttp import web

from actors import ActorSystem, CircuitBreakerConfig

CONFIG = CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout_duration=10.0)


class Upstream:
    """An HTTP server whose answer tests set: ``status`` (and ``headers``) for every path,
    except paths starting with ``/fail`` (always 500) and ``/slow`` (answers after
    ``delay`` seconds).  ``hits`` counts the requests that reached it."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.delay = 5.0
        self.hits = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if request.path.startswith("/fail"):
            return web.Response(status=500)
        if request.path.startswith("/slow"):
            await anyio.sleep(self.delay)
        return web.Response(status=self.status, headers=self.headers, text="hello")


#: Starts one more upstream on a port of its own.
StartUpstream = Callable[[], Awaitable[Upstream]]


@pytest.fixture
async def start_upstream() -> AsyncIterator[StartUpstream]:
    """Start upstreams on demand; every one stops when the test ends."""
    async with AsyncExitStack() as stack:

        async def start() -> Upstream:
            upstream = Upstream()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", upstream.handle)
            runner = web.AppRunner(app, shutdown_timeout=0.1)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            upstream.port = runner.addresses[0][1]
            return upstream

        yield start


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem() as system:
        yield system


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (taken, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
