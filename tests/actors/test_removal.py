"""Removing breakers: outcomes counted first, the world told, held handles refused, no leak."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from actors import ActorSystem, CircuitBreakerConfig, ManualClock
from actors.errors import BreakerRemovedError, CircuitBreakerOpenError
from actors.events import BreakerRemoved, CallsRecorded, Event, StateChanged
from service.monitor import CircuitBreakerMonitor

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(failure_threshold=2, timeout_duration=10.0)
#: Create-use-remove cycles in the memory test (tracemalloc makes each one slower).
CYCLES = 25_000


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


async def ok_async() -> str:
    return "ok"


def boom() -> None:
    raise Boom


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


async def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    with anyio.fail_after(deadline):
        while not condition():
            await anyio.sleep(0.001)


async def test_removal_counts_pending_outcomes_then_publishes_breaker_removed(
    system: ActorSystem,
) -> None:
    seen: list[Event] = []
    system.bus.subscribe(seen.append, events=(CallsRecorded, BreakerRemoved))
    breaker = system.breaker("tenant-1", CONFIG)
    for _ in range(25):  # hot-path successes, still undrained when the removal comes
        breaker.call(ok)
    assert system.remove_breaker("tenant-1") is True
    await wait_until(lambda: any(isinstance(e, BreakerRemoved) for e in seen))
    recorded = sum(e.successes for e in seen if isinstance(e, CallsRecorded))
    assert recorded == 25
    assert isinstance(seen[-1], BreakerRemoved) and seen[-1].breaker == "tenant-1"
    assert system.get("tenant-1") is None
    assert system.remove_breaker("tenant-1") is False


async def test_a_held_handle_raises_a_clear_error_and_the_name_starts_afresh(
    system: ActorSystem,
) -> None:
    old = system.breaker("tenant-2", CONFIG)
    for _ in range(2):
        with pytest.raises(Boom):
            old.call(boom)
    with pytest.raises(CircuitBreakerOpenError):
        old.call(ok)
    system.remove_breaker("tenant-2")
    with pytest.raises(BreakerRemovedError, match="'tenant-2' was removed"):
        old.call(ok)
    with pytest.raises(BreakerRemovedError):
        await old.call_async(ok_async)
    with pytest.raises(BreakerRemovedError):
        old.reset()
    with pytest.raises(BreakerRemovedError):
        await old.metrics_async()
    new = system.breaker("tenant-2", CONFIG)
    assert new is not old
    assert new.call(ok) == "ok"
    assert (await new.metrics_async()).total_calls == 1


async def test_a_call_running_during_the_removal_keeps_its_own_outcome(
    system: ActorSystem,
) -> None:
    breaker = system.breaker("tenant-3", CONFIG)
    breaker.call(ok)  # active: the next call takes the fast path
    started, release = anyio.Event(), anyio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        raise Boom

    async def run() -> None:
        with pytest.raises(Boom):  # the caller's exception, not BreakerRemovedError
            await breaker.call_async(slow)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await started.wait()
        system.remove_breaker("tenant-3")
        release.set()


async def test_health_forgets_a_removed_breaker(system: ActorSystem) -> None:
    breaker = system.breaker("tenant-4", CONFIG)
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(boom)
    monitor = CircuitBreakerMonitor(system)
    assert monitor.get_health_summary()["overall_health"] == "failed"
    system.remove_breaker("tenant-4")
    summary = await monitor.get_health_summary_async()
    assert summary["total_breakers"] == 0 and summary["overall_health"] == "healthy"
    await wait_until(lambda: not monitor.aggregator()._entries)
    monitor.close()


async def test_removal_stops_the_break_timer(system: ActorSystem, clock: ManualClock) -> None:
    seen: list[Event] = []
    system.bus.subscribe(seen.append, events=(StateChanged,))
    breaker = system.breaker("tenant-5", CONFIG)
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(boom)
    system.remove_breaker("tenant-5")
    clock.advance(60.0)  # the break would have ended here
    await wait_until(lambda: len(seen) == 1)
    await anyio.sleep(0.01)
    assert [e.to_state.value for e in seen if isinstance(e, StateChanged)] == ["open"]
    assert system.runtime._timers == {}


async def test_create_use_remove_cycles_leave_memory_flat(system: ActorSystem) -> None:
    def cycles(count: int) -> None:
        for index in range(count):
            name = f"cycle-{index}"
            system.breaker(name, CONFIG).call(ok)
            system.remove_breaker(name)

    cycles(2_000)  # warm-up: caches, interned configs, shared gates, the runtime's tables
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cycles(CYCLES)
        await anyio.sleep(0)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after {CYCLES:,} cycles"  # < 3 B a cycle
