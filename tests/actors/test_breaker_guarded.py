"""``Breaker.guarded_async()``: one call whose body is an ``async with`` block (e.g. a stream)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import pytest

from actors import ActorSystem, Breaker, CircuitBreakerConfig, CircuitState, ManualClock
from actors.errors import CallTimeoutError, CircuitBreakerOpenError

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


class Harmless(Exception):
    pass


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


def make(system: ActorSystem, **options: Any) -> Breaker:
    config = CircuitBreakerConfig(ignore_exceptions=(Harmless,), **options)
    return system.create_breaker("guarded", config)


async def fail(breaker: Breaker) -> None:
    with contextlib.suppress(Boom):
        async with breaker.guarded_async():
            raise Boom


async def test_a_completed_body_is_a_success(system: ActorSystem) -> None:
    breaker = make(system)
    async with breaker.guarded_async():
        pass
    metrics = await breaker.metrics_async()
    assert (metrics.total_calls, metrics.successful_calls) == (1, 1)


async def test_failures_open_the_breaker_and_an_open_breaker_never_runs_the_body(
    system: ActorSystem,
) -> None:
    breaker = make(system, failure_threshold=2)
    await fail(breaker)
    await fail(breaker)
    assert await breaker.state_async() is CircuitState.OPEN
    ran = False
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker.guarded_async():
            ran = True
    assert not ran
    metrics = await breaker.metrics_async()
    assert (metrics.failed_calls, metrics.rejected_calls) == (2, 1)


async def test_ignored_exceptions_propagate_and_count_as_ignored(system: ActorSystem) -> None:
    breaker = make(system, failure_threshold=1)
    with pytest.raises(Harmless):
        async with breaker.guarded_async():
            raise Harmless
    metrics = await breaker.metrics_async()
    assert (metrics.state, metrics.ignored_calls, metrics.failed_calls) == (
        CircuitState.CLOSED,
        1,
        0,
    )


async def test_half_open_probe_through_a_block_closes_the_breaker(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(system, failure_threshold=1, success_threshold=1, timeout_duration=10.0)
    await fail(breaker)
    clock.advance(10.0)
    async with breaker.guarded_async():
        assert (await breaker.metrics_async()).half_open_calls_in_flight == 1
    assert await breaker.state_async() is CircuitState.CLOSED


async def test_a_cancelled_probe_gives_its_half_open_slot_back(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(system, failure_threshold=1, half_open_max_calls=1, timeout_duration=10.0)
    await fail(breaker)
    clock.advance(10.0)
    entered = anyio.Event()
    async with anyio.create_task_group() as group:

        async def probe() -> None:
            async with breaker.guarded_async():
                entered.set()
                await anyio.sleep_forever()

        group.start_soon(probe)
        await entered.wait()
        group.cancel_scope.cancel()
    metrics = await breaker.metrics_async()
    assert (metrics.state, metrics.half_open_calls_in_flight) == (CircuitState.HALF_OPEN, 0)
    assert (metrics.ignored_calls, metrics.failed_calls) == (1, 1)


async def test_an_abandoned_stream_counts_as_ignored(system: ActorSystem) -> None:
    breaker = make(system)

    async def stream() -> AsyncGenerator[int, None]:
        async with breaker.guarded_async():
            for item in range(10):
                yield item

    async with contextlib.aclosing(stream()) as items:
        async for item in items:
            if item == 2:
                break
    metrics = await breaker.metrics_async()
    assert (metrics.total_calls, metrics.ignored_calls) == (1, 1)


async def test_a_body_that_overruns_call_timeout_fails_once_it_completes(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(system, call_timeout=1.0)
    with pytest.raises(CallTimeoutError):
        async with breaker.guarded_async():
            clock.advance(2.0)
    assert (await breaker.metrics_async()).failed_calls == 1
