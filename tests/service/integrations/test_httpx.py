"""The httpx transports (async, and sync from a worker thread) against real servers."""

from __future__ import annotations

import anyio.to_thread
import httpx
import pytest

from actors import ActorSystem, CircuitBreakerConfig, ManualClock
from actors.errors import CircuitBreakerOpenError
from service.integrations.httpx import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerTransport,
    origin,
)
from tests.service.integrations.conftest import CONFIG, StartUpstream, closed_port

pytestmark = pytest.mark.anyio


async def test_async_only_the_failing_hosts_breaker_opens(
    system: ActorSystem, start_upstream: StartUpstream
) -> None:
    healthy, failing = await start_upstream(), await start_upstream()
    failing.status = 500
    transport = AsyncCircuitBreakerTransport(system=system, config=CONFIG)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(CONFIG.failure_threshold):
            assert (await client.get(failing.url)).status_code == 500
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(failing.url)
        assert failing.hits == CONFIG.failure_threshold
        assert (await client.get(healthy.url)).status_code == 200
        for _ in range(CONFIG.failure_threshold):
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{closed_port()}/")
    states = {name: b.published_state.value for name, b in system.breakers().items()}
    assert states[f"http://127.0.0.1:{failing.port}"] == "open"
    assert states[f"http://127.0.0.1:{healthy.port}"] == "closed"


async def test_sync_mirrors_async_from_a_plain_thread(
    system: ActorSystem, start_upstream: StartUpstream
) -> None:
    healthy, failing = await start_upstream(), await start_upstream()
    failing.status = 503
    transport = CircuitBreakerTransport(system=system, config=CONFIG)

    def use() -> tuple[list[int], bool, int]:
        with httpx.Client(transport=transport) as client:
            codes = [client.get(failing.url).status_code for _ in range(2)]
            try:
                client.get(failing.url)
                rejected = False
            except CircuitBreakerOpenError:
                rejected = True
            return codes, rejected, client.get(healthy.url).status_code

    assert await anyio.to_thread.run_sync(use) == ([503, 503], True, 200)
    assert failing.hits == 2


async def test_async_retry_after_and_429(clock: ManualClock, start_upstream: StartUpstream) -> None:
    limited, unavailable = await start_upstream(), await start_upstream()
    limited.status = 429
    unavailable.status, unavailable.headers = 503, {"Retry-After": "100"}
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout_duration=10.0)
    async with ActorSystem(clock=clock) as system:
        transport = AsyncCircuitBreakerTransport(system=system, config=config)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                assert (await client.get(limited.url)).status_code == 429  # ignored
            assert (await client.get(unavailable.url)).status_code == 503
            clock.advance(50.0)
            with pytest.raises(CircuitBreakerOpenError) as caught:
                await client.get(unavailable.url)
            assert caught.value.retry_after == pytest.approx(50.0)


def test_default_key_fills_in_the_port() -> None:
    assert origin(httpx.URL("https://example.com/a?b=1")) == "https://example.com:443"
    assert origin(httpx.URL("http://example.com:8080/")) == "http://example.com:8080"
