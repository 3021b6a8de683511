"""Breakers across loops and threads: state survives ``asyncio.run()`` boundaries, the sync
facade never deadlocks its own loop, an embedded system drains on the way out, and the break
timer runs with no traffic at all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.to_thread
import pytest

from actors import (
    ActorSystem,
    ActorSystemClosedError,
    Breaker,
    CallsRecorded,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    Event,
    ManualClock,
    Runtime,
    StateChanged,
)
from actors.runtime import Actor
from service.circuit_breaker import get_circuit_breaker, get_event_bus

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
TRIP_AT_THREE = CircuitBreakerConfig(failure_threshold=3, timeout_duration=60.0)


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def boom() -> None:
    raise Boom


async def aboom() -> None:
    raise Boom


def finishes(target: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run ``target`` on a daemon thread; fail (instead of hanging the suite) if it deadlocks."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{target!r} did not finish within {timeout}s (deadlock?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def run_in_fresh_loop(coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return finishes(lambda: asyncio.run(coroutine()))


# -- state across asyncio.run() boundaries ---------------------------------------------------


def check_survives_loops_and_threads(breaker: Breaker) -> None:
    async def fail_twice() -> None:
        for _ in range(2):
            with pytest.raises(Boom):
                await breaker.call_async(aboom)
        assert (await breaker.metrics_async()).consecutive_failures == 2

    async def fail_once_more() -> CircuitState:
        with pytest.raises(Boom):
            await breaker.call_async(aboom)
        with pytest.raises(CircuitBreakerOpenError):
            await breaker.call_async(aboom)
        return await breaker.state_async()

    run_in_fresh_loop(fail_twice)
    assert breaker.metrics.consecutive_failures == 2  # from a thread with no loop at all
    assert run_in_fresh_loop(fail_once_more) is OPEN

    def from_a_plain_thread() -> Any:
        with pytest.raises(CircuitBreakerOpenError):
            breaker.call(ok)
        return breaker.metrics

    metrics = finishes(from_a_plain_thread)
    assert metrics.state is OPEN
    assert (metrics.failed_calls, metrics.rejected_calls, metrics.total_calls) == (3, 2, 5)
    breaker.reset()
    assert finishes(lambda: breaker.call(ok)) == "ok"

    async def after() -> Any:
        return await breaker.call_async(asyncio.sleep, 0, "third loop")

    assert run_in_fresh_loop(after) == "third loop"
    assert breaker.metrics.successful_calls == 2


def test_registry_breaker_survives_two_asyncio_runs_and_a_thread(unique_name: str) -> None:
    check_survives_loops_and_threads(get_circuit_breaker(unique_name, TRIP_AT_THREE))


def test_floating_system_binds_to_each_loop_in_turn_and_keeps_state() -> None:
    # A private floating system (what the registry's default system is) whose first user is
    # async, so it binds to that loop and has to move when the loop ends.
    system = ActorSystem(name="floating-test", _floating=True)
    check_survives_loops_and_threads(system.breaker("hops", TRIP_AT_THREE))


def test_a_break_timer_armed_on_a_loop_that_ends_still_fires() -> None:
    system = ActorSystem(name="timer-moves", _floating=True)
    breaker = system.breaker(
        "moves", CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
    )
    half_open = threading.Event()

    def watch(event: Event) -> None:
        if isinstance(event, StateChanged) and event.to_state is HALF_OPEN:
            half_open.set()

    system.bus.subscribe(watch, events=(StateChanged,))

    async def trip() -> None:
        with pytest.raises(Boom):
            await breaker.call_async(aboom)

    run_in_fresh_loop(trip)  # the loop that armed the timer is gone now
    assert half_open.wait(10), "the break timer did not fire after its loop ended"
    assert breaker.state is HALF_OPEN


# -- the sync facade on the loop's own thread ------------------------------------------------


async def sync_facade_story(breaker: Breaker, clock: ManualClock | None) -> None:
    """Every sync entry point, called from a coroutine on the loop thread."""
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(boom)
    assert breaker.state is OPEN
    with pytest.raises(CircuitBreakerOpenError):
        breaker.call(ok)
    if clock is not None:
        clock.advance(60.0)
        assert breaker.call(ok) == "ok"  # a probe: an Admit ask and a RecordSuccess ask
        assert breaker.metrics.state is HALF_OPEN
    breaker.force_open()
    assert breaker.get_metrics()["forced"] is True
    breaker.force_close()
    assert breaker.state is CLOSED
    breaker.reset()
    assert breaker.metrics.total_calls == 0
    assert breaker.call(ok) == "ok"


def test_sync_facade_in_a_coroutine_on_the_loop_thread_does_not_deadlock() -> None:
    async def main() -> None:
        clock = ManualClock()
        async with ActorSystem(clock=clock) as system:
            await sync_facade_story(system.create_breaker("inline", TRIP_AT_THREE), clock)

    run_in_fresh_loop(main)


def test_sync_facade_of_a_registry_breaker_in_a_coroutine_does_not_deadlock(
    unique_name: str,
) -> None:
    async def main() -> None:
        await sync_facade_story(get_circuit_breaker(unique_name, TRIP_AT_THREE), None)

    run_in_fresh_loop(main)
    run_in_fresh_loop(main)  # and again, on a new loop, after the first one ended


# -- embedding and graceful shutdown ---------------------------------------------------------


class Tally(Actor):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.count = 0

    def _receive(self, message: Any) -> None:
        self.count += 1


@pytest.mark.anyio
async def test_embedded_system_drains_mailboxes_and_subscribers_on_exit() -> None:
    recorded: list[CallsRecorded] = []

    async def slowish(event: Event) -> None:
        await anyio.sleep(0)
        assert isinstance(event, CallsRecorded)
        recorded.append(event)

    async with ActorSystem() as system:
        tally = system.attach_actor(Tally)
        assert isinstance(tally, Tally)
        system.bus.subscribe(slowish, events=(CallsRecorded,))
        breaker = system.create_breaker("drain")
        for _ in range(1000):
            tally.tell("hello")
        await anyio.to_thread.run_sync(lambda: [tally.tell("from a thread") for _ in range(1000)])
        for _ in range(100):
            breaker.call(ok)  # posted, never awaited
    assert tally.count == 2000
    assert sum(event.successes for event in recorded) == 100
    with pytest.raises(ActorSystemClosedError):
        breaker.call(ok)
    with pytest.raises(ActorSystemClosedError):
        await breaker.call_async(asyncio.sleep, 0)
    with pytest.raises(ActorSystemClosedError):
        breaker.metrics  # noqa: B018 - the property is the ask under test
    with pytest.raises(ActorSystemClosedError):
        system.create_breaker("too late")


@pytest.mark.anyio
async def test_start_and_stop_pair_embeds_like_async_with() -> None:
    system = ActorSystem()
    await system.start()
    tally = system.attach_actor(Tally)
    assert isinstance(tally, Tally)
    for _ in range(10):
        tally.tell("x")
    breaker = system.breaker("paired")
    with pytest.raises(Boom):
        await breaker.call_async(aboom)
    await system.stop()
    assert tally.count == 10
    with pytest.raises(ActorSystemClosedError):
        await breaker.reset_async()


# -- the break timer, with no traffic --------------------------------------------------------


async def wait_for_half_open(
    system: ActorSystem, breaker: Breaker, trip: Callable[[], Any]
) -> None:
    reached = anyio.Event()
    changes: list[StateChanged] = []

    async def watch(event: Event) -> None:
        assert isinstance(event, StateChanged)
        changes.append(event)
        if event.to_state is HALF_OPEN:
            reached.set()

    system.bus.subscribe(watch, events=(StateChanged,))
    with pytest.raises(Boom):
        await breaker.call_async(aboom)
    trip()
    with anyio.fail_after(10):
        await reached.wait()
    assert [(c.from_state, c.to_state, c.reason) for c in changes] == [
        (CLOSED, OPEN, "failure_threshold"),
        (OPEN, HALF_OPEN, "timeout_elapsed"),
    ]


@pytest.mark.anyio
async def test_timer_moves_open_to_half_open_without_traffic_on_a_manual_clock() -> None:
    clock = ManualClock()
    async with ActorSystem(clock=clock) as system:
        breaker = system.create_breaker("quiet", CircuitBreakerConfig(failure_threshold=1))
        await wait_for_half_open(system, breaker, lambda: clock.advance(60.0))


@pytest.mark.anyio
async def test_timer_moves_open_to_half_open_without_traffic_on_the_real_clock() -> None:
    async with ActorSystem() as system:
        config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
        breaker = system.create_breaker("quiet-real", config)
        await wait_for_half_open(system, breaker, lambda: None)


def test_timer_fires_on_the_default_system_in_a_purely_sync_program(unique_name: str) -> None:
    config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
    half_open = threading.Event()

    def watch(event: Event) -> None:
        mine = isinstance(event, StateChanged) and event.breaker == unique_name
        if mine and event.to_state is HALF_OPEN:
            half_open.set()

    subscription = get_event_bus().subscribe(watch, events=(StateChanged,))
    try:

        def sync_program() -> None:
            breaker = get_circuit_breaker(unique_name, config)
            with pytest.raises(Boom):
                breaker.call(boom)
            assert half_open.wait(10), "no HALF_OPEN without traffic"

        finishes(sync_program)
    finally:
        subscription.close()
