"""Eviction of breakers created on demand: idle or least recently used, never a non-CLOSED one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from actors import ActorSystem, CircuitBreakerConfig, ManualClock
from actors.errors import BreakerRemovedError, ConfigurationError
from actors.events import BreakerRemoved, Event

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout_duration=30.0)


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def boom() -> None:
    raise Boom


async def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    with anyio.fail_after(deadline):
        while not condition():
            await anyio.sleep(0.001)


@pytest.fixture
async def idle_system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock, max_idle=60.0) as system:
        yield system


def trip(system: ActorSystem, name: str) -> None:
    with pytest.raises(Boom):
        system.breaker(name, CONFIG).call(boom)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_idle": 0}, "max_idle: expected a number of seconds > 0, got 0"),
        ({"max_idle": float("inf")}, "max_idle: expected a number of seconds > 0"),
        ({"max_breakers": 0}, "max_breakers: expected int >= 1, got 0"),
        ({"max_breakers": 2.5}, "max_breakers: expected int >= 1, got 2.5"),
    ],
)
def test_limits_are_checked_and_named(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ActorSystem(**settings)  # type: ignore[arg-type]


async def test_idle_closed_breakers_go_and_open_half_open_forced_ones_stay(
    idle_system: ActorSystem, clock: ManualClock
) -> None:
    system = idle_system
    system.breaker("never-called", CONFIG)
    system.breaker("closed", CONFIG).call(ok)
    trip(system, "open")
    trip(system, "half-open")
    system.breaker("forced-closed", CONFIG).force_close()
    system.breaker("forced-open", CONFIG).force_open()
    clock.advance(31.0)  # 'half-open' and 'open' may probe now; admit one probe in one
    held = system.breaker("half-open")
    probe_started = anyio.Event()
    release = anyio.Event()

    async def probe() -> str:
        probe_started.set()
        await release.wait()
        return "ok"

    async with anyio.create_task_group() as group:
        group.start_soon(held.call_async, probe)
        await probe_started.wait()
        clock.advance(60.0)
        assert sorted(system.evict_idle()) == ["closed", "never-called"]
        release.set()
    assert sorted(system.breakers()) == ["forced-closed", "forced-open", "half-open", "open"]
    clock.advance(120.0)
    # 'half-open' closed after its probe: idle and CLOSED now, it goes; OPEN and forced stay.
    assert system.evict_idle() == ["half-open"]
    assert sorted(system.breakers()) == ["forced-closed", "forced-open", "open"]


async def test_use_through_a_held_handle_counts_as_use(
    idle_system: ActorSystem, clock: ManualClock
) -> None:
    system = idle_system
    handle = system.breaker("busy", CONFIG)
    system.breaker("quiet", CONFIG)
    for _ in range(3):
        clock.advance(40.0)
        handle.call(ok)  # no lookup by name: the breaker's own outcomes say it is in use
        system.evict_idle()
    assert list(system.breakers()) == ["busy"]
    assert handle.call(ok) == "ok"


async def test_max_breakers_evicts_the_least_recently_used(clock: ManualClock) -> None:
    async with ActorSystem(clock=clock, max_breakers=3) as system:
        seen: list[Event] = []
        system.bus.subscribe(seen.append, events=(BreakerRemoved,))
        first = system.breaker("a", CONFIG)
        for name in ("b", "c"):
            clock.advance(1.0)
            system.breaker(name, CONFIG)
        clock.advance(1.0)
        system.breaker("a", CONFIG)  # looked up again: now the most recent
        clock.advance(1.0)
        system.breaker("d", CONFIG)  # the fourth: 'b' is the least recently used
        await wait_until(lambda: len(seen) == 1)
        assert sorted(system.breakers()) == ["a", "c", "d"]
        assert isinstance(seen[0], BreakerRemoved) and (seen[0].breaker, seen[0].evicted) == (
            "b",
            True,
        )
        assert first.call(ok) == "ok"


async def test_churn_through_many_keys_keeps_the_registry_bounded(clock: ManualClock) -> None:
    async with ActorSystem(clock=clock, max_breakers=100) as system:
        handles = []
        for index in range(5_000):
            breaker = system.breaker(f"host-{index}", CONFIG)
            breaker.call(ok)
            handles.append(breaker)
            if index % 500 == 0:
                trip(system, f"failing-{index}")  # never evicted while OPEN
            await anyio.sleep(0)  # let the queued sweeps run
        await wait_until(lambda: len(system.breakers()) <= 100 + 10)
        failing = [name for name in system.breakers() if name.startswith("failing-")]
        assert len(failing) == 10
        with pytest.raises(BreakerRemovedError):
            handles[0].call(ok)
