"""The event bus: subscribers of every kind, and that none of them can hurt a breaker or each
other (slow ones lose only ``CallsRecorded``, raising ones are contained)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

import actors.breaker
from actors import (
    ActorSystem,
    Breaker,
    CallsRecorded,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    ConfigChanged,
    Event,
    ManualClock,
    Runtime,
    StateChanged,
)
from actors.breaker import SAMPLE_MASK
from actors.runtime import Actor

pytestmark = pytest.mark.anyio

CLOSED, OPEN = CircuitState.CLOSED, CircuitState.OPEN


class Boom(Exception):
    pass


def ok() -> str:
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


def changes(events: list[Any]) -> list[tuple[CircuitState, CircuitState, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in events if isinstance(e, StateChanged)]


def outcomes(events: list[Any]) -> list[CallsRecorded]:
    return [e for e in events if isinstance(e, CallsRecorded)]


async def flood(breaker: Breaker, rounds: int) -> None:
    """Per round, without ever yielding to the loop: two state changes and two drains that
    each record one outcome (so two ``CallsRecorded``)."""
    for _ in range(rounds):
        breaker.force_close()
        breaker.call(ok)
        await breaker.metrics_async()  # an inline drain: publishes CallsRecorded(successes=1)
        breaker.force_open()
        with pytest.raises(CircuitBreakerOpenError):
            breaker.call(ok)
        await breaker.metrics_async()  # CallsRecorded(rejected=1)


# -- kinds of subscriber -------------------------------------------------------------------


async def test_async_subscriber_gets_every_event_in_order_on_the_loop_thread(
    system: ActorSystem,
) -> None:
    seen: list[Event] = []
    threads: set[int] = set()

    async def subscriber(event: Event) -> None:
        threads.add(threading.get_ident())
        await anyio.sleep(0)  # an awaiting subscriber still sees events one at a time, in order
        seen.append(event)

    subscription = system.bus.subscribe(subscriber)
    breaker = system.create_breaker("async-sub", CircuitBreakerConfig(failure_threshold=2))
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(boom)
    breaker.reset()
    await wait_until(lambda: len(changes(seen)) == 2)
    assert changes(seen) == [(CLOSED, OPEN, "failure_threshold"), (OPEN, CLOSED, "reset")]
    recorded = outcomes(seen)
    assert sum(event.failures for event in recorded) == 2
    assert threads == {threading.get_ident()}
    assert subscription.delivered == len(seen)
    assert subscription.failures == 0


async def test_sync_subscriber_runs_on_a_worker_thread(system: ActorSystem) -> None:
    seen: list[Event] = []
    threads: set[int] = set()

    def subscriber(event: Event) -> None:
        threads.add(threading.get_ident())
        seen.append(event)

    system.bus.subscribe(subscriber, events=(StateChanged,))
    breaker = system.create_breaker("sync-sub")
    breaker.force_open()
    breaker.force_close()
    await wait_until(lambda: len(seen) == 2)
    assert changes(seen) == [(CLOSED, OPEN, "forced_open"), (OPEN, CLOSED, "forced_close")]
    assert threading.get_ident() not in threads


class Inbox(Actor):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.events: list[Event] = []
        self.threads: set[int] = set()

    def _receive(self, message: Any) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(message)


async def test_actor_subscriber_gets_events_through_its_mailbox(system: ActorSystem) -> None:
    inbox = system.attach_actor(Inbox)
    assert isinstance(inbox, Inbox)
    system.bus.subscribe(inbox)
    breaker = system.create_breaker("actor-sub", CircuitBreakerConfig(failure_threshold=1))
    with pytest.raises(Boom):
        breaker.call(boom)
    breaker.reconfigure(CircuitBreakerConfig(failure_threshold=2))
    await wait_until(lambda: len(inbox.events) == 3)
    assert changes(inbox.events) == [(CLOSED, OPEN, "failure_threshold")]
    assert [e.failures for e in outcomes(inbox.events)] == [1]
    (config_event,) = [e for e in inbox.events if isinstance(e, ConfigChanged)]
    assert config_event.fields == ("failure_threshold",)
    assert inbox.threads == {threading.get_ident()}


async def test_actor_subscriber_with_a_full_mailbox_drops_only_outcomes(
    system: ActorSystem,
) -> None:
    inbox = system.attach_actor(Inbox)
    assert isinstance(inbox, Inbox)
    subscription = system.bus.subscribe(inbox, buffer=3)
    breaker = system.create_breaker("actor-flood")
    await flood(breaker, 20)  # never yields: the inbox cannot drain meanwhile
    await wait_until(
        lambda: len(changes(inbox.events)) == 39
    )  # the first force_close changes nothing
    assert len(outcomes(inbox.events)) <= 3
    assert subscription.dropped == 40 - len(outcomes(inbox.events))
    assert subscription.dropped >= 37


# -- a slow subscriber ---------------------------------------------------------------------


async def test_slow_subscriber_drops_only_outcomes_and_never_a_state_change(
    system: ActorSystem,
) -> None:
    release = threading.Event()
    started = threading.Event()
    slow_seen: list[Event] = []
    fast_seen: list[Event] = []

    def slow(event: Event) -> None:
        if not started.is_set():
            started.set()
            release.wait(10)  # stuck on the first event until the test lets it go
        slow_seen.append(event)

    async def fast(event: Event) -> None:
        fast_seen.append(event)

    slow_sub = system.bus.subscribe(slow, buffer=4)
    fast_sub = system.bus.subscribe(fast, buffer=100_000)
    breaker = system.create_breaker("flood")
    breaker.force_open()
    assert await anyio.to_thread.run_sync(started.wait, 10)
    rounds = 200
    await flood(breaker, rounds)

    # The fast subscriber is not held up by the slow one, and the breaker went on working.
    await wait_until(lambda: len(fast_seen) == 1 + 4 * rounds)
    assert breaker.state is OPEN
    assert fast_sub.dropped == 0
    assert slow_sub.dropped > 0

    release.set()
    await wait_until(lambda: not slow_sub.pending)
    assert changes(slow_seen) == changes(fast_seen)  # every StateChanged, in order
    assert len(changes(slow_seen)) == 1 + 2 * rounds
    published = len(outcomes(fast_seen))
    assert published == 2 * rounds
    assert len(outcomes(slow_seen)) + slow_sub.dropped == published
    assert system.bus.dropped == slow_sub.dropped
    stats = system.bus.statistics()
    assert stats["dropped"] == slow_sub.dropped
    assert {s["dropped"] for s in stats["subscriptions"]} == {0, slow_sub.dropped}


# -- a raising subscriber ------------------------------------------------------------------


async def test_raising_subscribers_are_logged_and_contained(
    system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    good: list[Event] = []

    def bad_sync(event: Event) -> None:
        raise RuntimeError("sync subscriber bug")

    async def bad_async(event: Event) -> None:
        raise RuntimeError("async subscriber bug")

    async def recorder(event: Event) -> None:
        good.append(event)

    with caplog.at_level(logging.ERROR, logger="actors.bus"):
        sync_sub = system.bus.subscribe(bad_sync, events=(StateChanged,))
        async_sub = system.bus.subscribe(bad_async, events=(StateChanged,))
        system.bus.subscribe(recorder, events=(StateChanged,))
        breaker = system.create_breaker("raising", CircuitBreakerConfig(failure_threshold=1))
        for _ in range(3):
            with pytest.raises(Boom):
                breaker.call(boom)  # opens
            breaker.reset()
            assert breaker.call(ok) == "ok"

        def logged() -> int:
            return sum("bus subscriber" in record.getMessage() for record in caplog.records)

        # The log line follows the failure count on the worker thread: wait for the lines.
        await wait_until(lambda: logged() == 12 and len(good) == 6)
    assert sync_sub.failures == async_sub.failures == 6
    assert changes(good) == [(CLOSED, OPEN, "failure_threshold"), (OPEN, CLOSED, "reset")] * 3
    assert sync_sub.delivered == async_sub.delivered == 0


# -- outcomes cost nothing without an outcome subscriber ------------------------------------


async def test_no_outcome_subscriber_means_no_calls_recorded_is_built(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = 0
    real = actors.breaker._mark

    def counting(data: Any) -> Any:  # the per-drain cost of building CallsRecorded
        nonlocal counted
        counted += 1
        return real(data)

    monkeypatch.setattr(actors.breaker, "_mark", counting)
    system.bus.subscribe(lambda event: None, events=(StateChanged, ConfigChanged))
    assert not system.bus.wants(CallsRecorded)
    breaker = system.create_breaker("quiet", CircuitBreakerConfig(failure_threshold=2))
    for _ in range(10):
        breaker.call(ok)
        await breaker.metrics_async()
    with pytest.raises(Boom):
        breaker.call(boom)
    assert counted == 0

    # The control: with an outcome subscriber, every drain pays for it.
    subscription = system.bus.subscribe(lambda event: None, events=(CallsRecorded,))
    assert system.bus.wants(CallsRecorded)
    breaker.call(ok)
    await breaker.metrics_async()
    assert counted > 0
    subscription.close()
    assert not system.bus.wants(CallsRecorded)


async def test_calls_recorded_aggregates_one_drain(system: ActorSystem) -> None:
    seen: list[Event] = []
    system.bus.subscribe(seen.append, events=(CallsRecorded,))
    breaker = system.create_breaker("batch", CircuitBreakerConfig(failure_threshold=100))
    for _ in range(50):
        breaker.call(ok)
    with pytest.raises(Boom):
        breaker.call(boom)  # an ask: drains the 50 successes and the failure together
    await wait_until(lambda: len(seen) == 1)
    (event,) = outcomes(seen)
    assert (event.successes, event.failures, event.ignored, event.rejected) == (50, 1, 0, 0)
    # Plain CLOSED calls are timed one in SAMPLE_MASK + 1, from the first (calls 0, 16, 32 and
    # 48 here); counts stay exact, the duration histogram gets the sample.
    assert sum(event.duration_buckets) == 1 + 50 // (SAMPLE_MASK + 1)
    assert event.breaker == "batch"
    assert event.failure_rate == pytest.approx(1 / 51)


async def test_a_reset_inside_a_drain_never_reports_negative_durations(
    system: ActorSystem,
) -> None:
    """The drain's histogram is the difference of two readings; a reset between them starts
    the counts again from zero, so the difference must not go below zero."""
    seen: list[Event] = []
    system.bus.subscribe(seen.append, events=(CallsRecorded,))
    breaker = system.create_breaker("reset-in-drain")
    breaker.call(ok)  # the first call is timed
    await breaker.metrics_async()  # drained: one duration in the histogram
    breaker.call(ok)  # not timed (one in SAMPLE_MASK + 1), counted
    await breaker.reset_async()  # one drain: the success, then the reset empties the histogram
    await wait_until(lambda: len(outcomes(seen)) == 2)
    first, second = outcomes(seen)
    assert sum(first.duration_buckets) == 1
    assert min(second.duration_buckets) == 0
    assert len(second.duration_buckets) == len(first.duration_buckets)


# -- subscribing and unsubscribing ---------------------------------------------------------


async def test_closed_subscription_gets_nothing_more(system: ActorSystem) -> None:
    seen: list[Event] = []
    subscription = system.bus.subscribe(seen.append, events=(StateChanged,))
    breaker = system.create_breaker("unsub")
    breaker.force_open()
    await wait_until(lambda: len(seen) == 1)
    subscription.close()
    breaker.force_close()
    assert system.bus.subscriptions == ()
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("subscriber", "options", "error"),
    [
        (print, {"buffer": 0}, ValueError),
        (print, {"buffer": True}, ValueError),
        (print, {"events": (int,)}, TypeError),
        ("not callable", {}, TypeError),
    ],
)
async def test_subscribe_rejects_bad_arguments(
    system: ActorSystem, subscriber: Any, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        system.bus.subscribe(subscriber, **options)
