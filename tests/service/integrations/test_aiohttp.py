"""The aiohttp middleware against real servers on 127.0.0.1."""

from __future__ import annotations

import aiohttp
import anyio
import pytest
from yarl import URL

from actors import ActorSystem, CircuitBreakerConfig, ManualClock
from actors.errors import CircuitBreakerOpenError
from service.integrations.aiohttp import CircuitBreakerMiddleware
from tests.service.integrations.conftest import CONFIG, StartUpstream, closed_port

pytestmark = pytest.mark.anyio


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def test_only_the_failing_hosts_breaker_opens_and_no_request_reaches_it(
    system: ActorSystem, start_upstream: StartUpstream
) -> None:
    healthy = [await start_upstream(), await start_upstream()]
    failing = await start_upstream()
    failing.status = 502
    middleware = CircuitBreakerMiddleware(system=system, config=CONFIG)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        for _ in range(CONFIG.failure_threshold):
            assert await status(session, f"{failing.url}/x") == 502  # the caller sees it
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await status(session, f"{failing.url}/x")
        assert caught.value.breaker_name == f"http://127.0.0.1:{failing.port}"
        assert failing.hits == CONFIG.failure_threshold  # the rejected one never left
        for upstream in healthy:
            for _ in range(5):
                assert await status(session, f"{upstream.url}/y") == 200
    states = {name: b.published_state.value for name, b in system.breakers().items()}
    assert states == {
        f"http://127.0.0.1:{healthy[0].port}": "closed",
        f"http://127.0.0.1:{healthy[1].port}": "closed",
        f"http://127.0.0.1:{failing.port}": "open",
    }


@pytest.mark.parametrize(("count_429", "opens"), [(False, False), (True, True)])
async def test_429_is_ignored_unless_asked_to_count(
    system: ActorSystem, start_upstream: StartUpstream, count_429: bool, opens: bool
) -> None:
    upstream = await start_upstream()
    upstream.status = 429
    middleware = CircuitBreakerMiddleware(system=system, config=CONFIG, count_429=count_429)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        for _ in range(CONFIG.failure_threshold):
            assert await status(session, upstream.url) == 429
        metrics = await system.breaker(f"http://127.0.0.1:{upstream.port}").metrics_async()
        assert (metrics.failed_calls, metrics.ignored_calls) == ((2, 0) if count_429 else (0, 2))
        assert (metrics.state.value == "open") is opens


async def test_408_and_connection_errors_and_timeouts_count(
    system: ActorSystem, start_upstream: StartUpstream
) -> None:
    upstream = await start_upstream()
    upstream.status = 408
    middleware = CircuitBreakerMiddleware(system=system, config=CONFIG)
    timeout = aiohttp.ClientTimeout(total=0.2)
    refused = f"http://127.0.0.1:{closed_port()}/"
    async with aiohttp.ClientSession(middlewares=(middleware,), timeout=timeout) as session:
        assert await status(session, upstream.url) == 408
        with pytest.raises(TimeoutError):
            await status(session, f"{upstream.url}/slow")
        with pytest.raises(CircuitBreakerOpenError):
            await status(session, upstream.url)
        for _ in range(CONFIG.failure_threshold):
            with pytest.raises(aiohttp.ClientConnectionError):
                await status(session, refused)
        with pytest.raises(CircuitBreakerOpenError):
            await status(session, refused)


async def test_retry_after_on_503_extends_the_break(
    clock: ManualClock, start_upstream: StartUpstream
) -> None:
    upstream = await start_upstream()
    upstream.status, upstream.headers = 503, {"Retry-After": "100"}
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout_duration=10.0)
    async with ActorSystem(clock=clock) as system:
        middleware = CircuitBreakerMiddleware(system=system, config=config)
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            assert await status(session, upstream.url) == 503
            clock.advance(50.0)  # the breaker's own break (10 s) is over; Retry-After's is not
            with pytest.raises(CircuitBreakerOpenError) as caught:
                await status(session, upstream.url)
            assert caught.value.retry_after == pytest.approx(50.0)
            clock.advance(51.0)
            upstream.status, upstream.headers = 200, {}
            assert await status(session, upstream.url) == 200
            assert upstream.hits == 2


@pytest.mark.parametrize("value", ["0", "-5", "100000", "soon"])
async def test_an_insane_retry_after_is_ignored(
    clock: ManualClock, start_upstream: StartUpstream, value: str
) -> None:
    upstream = await start_upstream()
    upstream.status, upstream.headers = 503, {"Retry-After": value}
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout_duration=10.0)
    async with ActorSystem(clock=clock) as system:
        middleware = CircuitBreakerMiddleware(system=system, config=config)
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            assert await status(session, upstream.url) == 503
            clock.advance(11.0)  # the configured break alone decides
            upstream.status = 200
            assert await status(session, upstream.url) == 200


def tenant(url: URL) -> str:
    return url.path.split("/")[2]


async def test_thousands_of_keys_concurrently_and_eviction_under_churn(
    system: ActorSystem, start_upstream: StartUpstream
) -> None:
    upstream = await start_upstream()
    middleware = CircuitBreakerMiddleware(
        system=system, config=CONFIG, key=tenant, max_breakers=500
    )
    limit = anyio.Semaphore(64)
    outcomes: dict[str, list[int | str]] = {}

    async def requests(path: str, times: int) -> None:
        async with limit:
            for _ in range(times):  # one after the other: the failures open before the last
                try:
                    answer: int | str = await status(session, upstream.url + path)
                except CircuitBreakerOpenError:
                    answer = "open"
                outcomes.setdefault(path, []).append(answer)

    connector = aiohttp.TCPConnector(limit=64)
    session = aiohttp.ClientSession(middlewares=(middleware,), connector=connector)
    async with session, anyio.create_task_group() as group:
        for index in range(3_000):
            if index % 300 == 0:
                group.start_soon(requests, f"/fail/t{index}", 3)
            else:
                group.start_soon(requests, f"/ok/t{index}", 1)
    failing = [path for path in outcomes if path.startswith("/fail")]
    assert len(failing) == 10
    assert all(outcomes[path] == [500, 500, "open"] for path in failing)
    assert all(outcomes[path] == [200] for path in outcomes if path.startswith("/ok"))
    names = set(system.breakers())
    assert len(names) <= 500 + 10
    assert {f"t{index}" for index in range(0, 3_000, 300)} <= names  # OPEN: never evicted
