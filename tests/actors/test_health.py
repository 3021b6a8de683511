"""The health aggregator: status rules as a table, then flows with real breakers on a bus."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors import ActorSystem, CircuitBreakerConfig, CircuitState, ManualClock
from actors.breaker import Breaker
from actors.errors import ConfigurationError
from actors.health import (
    DEFAULT_DEGRADED_THRESHOLD,
    GetHealth,
    HealthAggregator,
    HealthReport,
    HealthStatus,
    Observed,
    Unobservable,
    check_degraded_threshold,
    classify,
)

CONFIG = CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout_duration=10.0)

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN


@pytest.mark.parametrize(
    ("state", "rate", "error", "expected"),
    [
        (CLOSED, 0.0, None, HealthStatus.HEALTHY),
        (CLOSED, 0.0999, None, HealthStatus.HEALTHY),
        (CLOSED, 0.1, None, HealthStatus.DEGRADED),  # at the threshold: degraded
        (CLOSED, 1.0, None, HealthStatus.DEGRADED),
        (HALF_OPEN, 0.0, None, HealthStatus.DEGRADED),
        (OPEN, 0.0, None, HealthStatus.FAILED),
        (OPEN, 1.0, None, HealthStatus.FAILED),
        (None, 0.0, None, HealthStatus.HEALTHY),
        (CLOSED, 0.0, "ActorCrashedError: boom", HealthStatus.ERROR),
        (OPEN, 1.0, "ActorCrashedError: boom", HealthStatus.ERROR),
    ],
)
def test_status_rules(
    state: CircuitState | None, rate: float, error: str | None, expected: HealthStatus
) -> None:
    assert classify(state, rate, DEFAULT_DEGRADED_THRESHOLD, error) is expected


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, "0.1", True, None, float("nan")])
def test_threshold_must_be_a_number_in_0_1(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="degraded_threshold"):
        check_degraded_threshold(bad)


def test_threshold_accepts_one() -> None:
    assert check_degraded_threshold(1) == 1.0


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


def fail() -> None:
    raise ValueError("down")


def ok() -> int:
    return 1


def trip(breaker: Breaker) -> None:
    for _ in range(CONFIG.failure_threshold):
        with pytest.raises(ValueError):
            breaker.call(fail)


async def report(aggregator: HealthAggregator) -> HealthReport:
    answer: HealthReport = await aggregator.ask_async(GetHealth())
    return answer


@pytest.mark.anyio
async def test_no_breakers_is_healthy(system: ActorSystem) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    health = await report(aggregator)
    assert health.overall is HealthStatus.HEALTHY
    assert health.breakers == {}
    assert health.counts() == {"healthy": 0, "degraded": 0, "failed": 0, "error": 0}


@pytest.mark.anyio
async def test_follows_a_breaker_through_an_outage_from_the_bus(
    system: ActorSystem, clock: ManualClock
) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    breaker = system.breaker("payments", CONFIG)
    breaker.call(ok)
    await breaker.metrics_async()  # drains the breaker: its CallsRecorded is on the bus
    health = await report(aggregator)
    assert health.breakers["payments"].status is HealthStatus.HEALTHY
    assert health.breakers["payments"].state is CLOSED  # from the calls: no change seen yet

    trip(breaker)
    health = await report(aggregator)
    assert health.breakers["payments"].state is OPEN
    assert health.breakers["payments"].status is HealthStatus.FAILED
    assert health.overall is HealthStatus.FAILED

    clock.advance(CONFIG.timeout_duration)
    await breaker.metrics_async()  # the break timer's message is handled
    assert (await report(aggregator)).breakers["payments"].status is HealthStatus.DEGRADED

    breaker.call(ok)  # the probe closes it, and a close starts the rate window afresh
    health = await report(aggregator)
    entry = health.breakers["payments"]
    assert (entry.state, entry.status) == (CLOSED, HealthStatus.HEALTHY)
    assert entry.failure_rate == 0.0


@pytest.mark.anyio
async def test_a_fresh_snapshot_refreshes_the_failure_rate(
    system: ActorSystem, clock: ManualClock
) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    breaker = system.breaker("search", CONFIG)
    breaker.call(ok)
    with pytest.raises(ValueError):
        breaker.call(fail)
    assert (await report(aggregator)).breakers["search"].status is HealthStatus.DEGRADED
    clock.advance(CONFIG.monitoring_window + 1)  # the failure leaves the window
    aggregator.tell(Observed(snapshot=await breaker.metrics_async()))
    entry = (await report(aggregator)).breakers["search"]
    assert (entry.failure_rate, entry.status) == (0.0, HealthStatus.HEALTHY)


@pytest.mark.anyio
async def test_an_older_snapshot_does_not_undo_a_newer_state_change(
    system: ActorSystem, clock: ManualClock
) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    breaker = system.breaker("ledger", CONFIG)
    stale = await breaker.metrics_async()  # CLOSED, never changed
    clock.advance(1)
    trip(breaker)
    aggregator.tell(Observed(snapshot=stale))
    assert (await report(aggregator)).breakers["ledger"].state is OPEN

    clock.advance(CONFIG.timeout_duration)
    breaker.call(ok)  # probe: closed again, and the event reaches the aggregator ...
    newer = await breaker.metrics_async()
    aggregator.tell(Observed(snapshot=stale))  # ... so the stale snapshot still loses
    assert (await report(aggregator)).breakers["ledger"].state is CLOSED
    aggregator.tell(Observed(snapshot=newer))
    assert (await report(aggregator)).breakers["ledger"].state is CLOSED


@pytest.mark.anyio
async def test_a_snapshot_is_the_word_on_a_silent_force(system: ActorSystem) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    breaker = system.breaker("mail", CONFIG)
    trip(breaker)
    await breaker.force_open_async()  # already OPEN: no state change, no event
    assert (await report(aggregator)).breakers["mail"].forced is False
    aggregator.tell(Observed(snapshot=await breaker.metrics_async()))
    entry = (await report(aggregator)).breakers["mail"]
    assert (entry.state, entry.forced, entry.status) == (OPEN, True, HealthStatus.FAILED)


@pytest.mark.anyio
async def test_an_unobservable_breaker_is_error_until_observed_again(
    system: ActorSystem,
) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    healthy = system.breaker("a", CONFIG)
    broken = system.breaker("b", CONFIG)
    trip(system.breaker("c", CONFIG))
    aggregator.tell(Observed(snapshot=await healthy.metrics_async()))
    aggregator.tell(Unobservable(name="b", error="ActorCrashedError: boom"))
    health = await report(aggregator)
    assert health.breakers["b"].status is HealthStatus.ERROR
    assert health.breakers["b"].error == "ActorCrashedError: boom"
    assert health.overall is HealthStatus.ERROR  # worse than the open breaker "c"
    assert health.counts() == {"healthy": 1, "degraded": 0, "failed": 1, "error": 1}

    aggregator.tell(Observed(snapshot=await broken.metrics_async()))
    health = await report(aggregator)
    assert health.breakers["b"].status is HealthStatus.HEALTHY
    assert health.overall is HealthStatus.FAILED


@pytest.mark.anyio
async def test_threshold_is_configurable(system: ActorSystem) -> None:
    lenient = HealthAggregator.start(system.runtime, system.bus, degraded_threshold=0.5)
    strict = HealthAggregator.start(system.runtime, system.bus)
    breaker = system.breaker("geo", CONFIG)
    breaker.call(ok)
    breaker.call(ok)
    with pytest.raises(ValueError):
        breaker.call(fail)
    assert (await report(lenient)).breakers["geo"].status is HealthStatus.HEALTHY
    assert (await report(strict)).breakers["geo"].status is HealthStatus.DEGRADED


@pytest.mark.anyio
async def test_reset_clears_the_rate_and_stop_unsubscribes(system: ActorSystem) -> None:
    aggregator = HealthAggregator.start(system.runtime, system.bus)
    breaker = system.breaker("cache", CONFIG)
    trip(breaker)
    await breaker.reset_async()
    entry = (await report(aggregator)).breakers["cache"]
    assert (entry.state, entry.failure_rate, entry.status) == (CLOSED, 0.0, HealthStatus.HEALTHY)

    aggregator.stop()
    assert aggregator.subscription is None
    trip(breaker)
    assert (await report(aggregator)).breakers["cache"].state is CLOSED  # no longer listening


@pytest.mark.anyio
async def test_sync_query_from_another_thread(system: ActorSystem) -> None:
    import anyio.to_thread

    aggregator = HealthAggregator.start(system.runtime, system.bus)
    trip(system.breaker("dns", CONFIG))
    health = await anyio.to_thread.run_sync(aggregator.ask, GetHealth())
    assert health.overall is HealthStatus.FAILED


@pytest.mark.anyio
async def test_unknown_message_fails_the_asker_not_the_actor(system: ActorSystem) -> None:
    from actors.errors import ActorCrashedError

    aggregator = HealthAggregator.start(system.runtime, system.bus)
    with pytest.raises(ActorCrashedError):
        await aggregator.ask_async("hello")
    assert (await report(aggregator)).overall is HealthStatus.HEALTHY
