"""The policies beyond consecutive failures (issue 7), one story per option, on a manual clock."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from actors import (
    ActorSystem,
    Breaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    ConfigChanged,
    ManualClock,
    StateChanged,
)
from actors.errors import CallTimeoutError
from actors.machine import BreakerData, _next_break

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise Boom


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


def make(system: ActorSystem, **options: Any) -> Breaker:
    return system.create_breaker("policy", CircuitBreakerConfig(**options))


async def run(breaker: Breaker, fn: Callable[[], Any], times: int = 1) -> None:
    for _ in range(times):
        with contextlib.suppress(Boom):
            await breaker.call_async(fn)


def slow_call(clock: ManualClock, seconds: float) -> Callable[[], Any]:
    async def call() -> str:
        clock.advance(seconds)  # the manual clock makes the call take exactly this long
        return "slow"

    return call


async def test_failure_rate_opens_once_minimum_calls_are_in_the_time_window(
    system: ActorSystem,
) -> None:
    breaker = make(system, failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=4)
    await run(breaker, ok, 2)
    await run(breaker, boom)
    assert breaker.state is CircuitState.CLOSED  # 3 calls < minimum_calls
    await run(breaker, boom)
    assert breaker.state is CircuitState.OPEN  # 2 / 4 = 0.5 >= 0.5


async def test_failure_rate_time_window_forgets_old_calls(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(
        system,
        failure_threshold=100,
        failure_rate_threshold=0.5,
        minimum_calls=2,
        monitoring_window=10,
    )
    await run(breaker, boom)
    clock.advance(11)  # that failure leaves the window
    await run(breaker, ok)
    await run(breaker, ok)
    await run(breaker, boom)
    assert breaker.state is CircuitState.CLOSED  # 1 / 3 in the window


async def test_count_based_window_keeps_only_the_last_n_calls(system: ActorSystem) -> None:
    breaker = make(
        system,
        failure_threshold=100,
        failure_rate_threshold=0.6,
        sliding_window_size=5,
        minimum_calls=5,
    )
    await run(breaker, boom, 2)
    await run(breaker, ok, 5)  # pushes both failures out of the last 5
    await run(breaker, boom, 2)
    assert breaker.state is CircuitState.CLOSED  # 2 / 5 = 0.4
    await run(breaker, boom)
    assert breaker.state is CircuitState.OPEN  # 3 / 5 = 0.6


async def test_slow_successes_open_the_breaker(system: ActorSystem, clock: ManualClock) -> None:
    breaker = make(
        system,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        minimum_calls=4,
    )
    await run(breaker, ok, 2)
    await run(breaker, slow_call(clock, 2.0))
    assert breaker.state is CircuitState.CLOSED
    await run(breaker, slow_call(clock, 2.0))
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.failed_calls == 0  # they were slow, not failed


async def test_call_timeout_cancels_an_async_call_and_counts_a_failure(
    system: ActorSystem,
) -> None:
    breaker = make(system, call_timeout=0.01, failure_threshold=1)
    cancelled = anyio.Event()

    async def hangs() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with pytest.raises(CallTimeoutError) as caught:
        await breaker.call_async(hangs)
    assert isinstance(caught.value, TimeoutError)
    assert cancelled.is_set()
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.failed_calls == 1


async def test_a_sync_call_that_overruns_fails_after_it_returns(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(system, call_timeout=1.0, failure_threshold=5)

    def overruns() -> str:
        clock.advance(2.0)
        return "too late"

    with pytest.raises(CallTimeoutError):
        breaker.call(overruns)
    assert breaker.call(lambda: "on time") == "on time"
    metrics = breaker.metrics
    assert (metrics.failed_calls, metrics.successful_calls) == (1, 1)


async def test_backoff_grows_per_failed_probe_caps_and_resets_after_close(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(
        system,
        failure_threshold=1,
        success_threshold=1,
        timeout_duration=10,
        backoff_multiplier=2,
        max_timeout_duration=30,
    )
    await run(breaker, boom)
    breaks = [breaker.metrics.retry_after]
    for _ in range(3):
        clock.advance(breaks[-1] or 0)
        await run(breaker, boom)  # the probe fails
        breaks.append(breaker.metrics.retry_after)
    assert breaks == [10, 20, 30, 30]
    clock.advance(30)
    await run(breaker, ok)  # the probe succeeds: CLOSED, break back to base
    assert breaker.state is CircuitState.CLOSED
    await run(breaker, boom)
    assert breaker.metrics.retry_after == 10


def test_jitter_draws_the_break_between_base_and_backed_off_value() -> None:
    config = CircuitBreakerConfig(timeout_duration=10, backoff_multiplier=3, backoff_jitter=True)
    data = BreakerData("jitter")
    data.rng = random.Random(7)
    assert _next_break(data, "failure_threshold", config) == 10  # nothing to jitter yet
    draws = [_next_break(data, "probe_failed", config) for _ in range(3)]
    ceilings = [30, 90, 270]
    assert all(10 <= draw <= ceiling for draw, ceiling in zip(draws, ceilings, strict=True))
    assert len(set(draws)) == 3


async def test_half_open_without_a_completed_probe_goes_back_to_open(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = make(
        system,
        failure_threshold=1,
        timeout_duration=10,
        max_half_open_duration=5,
        success_threshold=2,
    )
    await run(breaker, boom)
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    clock.advance(3)
    await run(breaker, ok)  # a completed probe restarts the half-open clock: 5 s from now
    clock.advance(4.9)
    assert breaker.state is CircuitState.HALF_OPEN
    clock.advance(0.1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.retry_after == 10


async def test_failure_predicate_counts_a_returned_value_without_raising(
    system: ActorSystem,
) -> None:
    breaker = make(system, failure_threshold=2, failure_predicate=lambda status: status >= 500)

    async def status(code: int) -> int:
        return code

    assert await breaker.call_async(status, 503) == 503
    assert await breaker.call_async(status, 200) == 200
    assert await breaker.call_async(status, 502) == 502
    assert await breaker.call_async(status, 500) == 500
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitBreakerOpenError):
        await breaker.call_async(status, 200)


async def test_is_failure_replaces_the_exception_tuples(system: ActorSystem) -> None:
    breaker = make(
        system,
        failure_threshold=1,
        expected_exceptions=(Boom,),
        is_failure=lambda exc: isinstance(exc, KeyError),
    )
    await run(breaker, boom)  # Boom is ignored now
    assert breaker.state is CircuitState.CLOSED

    async def missing() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await breaker.call_async(missing)
    assert breaker.state is CircuitState.OPEN


async def test_reconfigure_applies_between_messages_keeps_counts_and_publishes(
    system: ActorSystem,
) -> None:
    events: list[Any] = []

    async def record(event: Any) -> None:
        events.append(event)

    system.bus.subscribe(record, events=(ConfigChanged, StateChanged))
    breaker = make(system, failure_threshold=5)
    await run(breaker, boom, 3)
    await breaker.reconfigure_async(CircuitBreakerConfig(failure_threshold=4))
    assert breaker.config.failure_threshold == 4
    assert breaker.metrics.consecutive_failures == 3  # counts kept
    await run(breaker, boom)
    assert breaker.state is CircuitState.OPEN
    breaker.reconfigure(CircuitBreakerConfig(failure_threshold=4))  # no change, no event
    with anyio.fail_after(5):
        while len(events) < 2:
            await anyio.sleep(0)
    assert isinstance(events[0], ConfigChanged)
    assert events[0].fields == ("failure_threshold",)
    assert isinstance(events[1], StateChanged)
    assert events[1].reason == "failure_threshold"
    with pytest.raises(TypeError, match="config"):
        await breaker.reconfigure_async({"failure_threshold": 1})  # type: ignore[arg-type]


async def test_reconfigure_to_a_call_timeout_takes_effect_on_the_next_call(
    system: ActorSystem,
) -> None:
    breaker = make(system)
    await breaker.reconfigure_async(CircuitBreakerConfig(call_timeout=0.01))
    with pytest.raises(CallTimeoutError):
        await breaker.call_async(anyio.sleep_forever)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"failure_rate_threshold": 0}, "failure_rate_threshold"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
        ({"sliding_window_size": 0}, "sliding_window_size"),
        ({"sliding_window_size": 5}, "sliding_window_size"),  # < minimum_calls (10)
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"slow_call_duration": -1}, "slow_call_duration"),
        ({"slow_call_rate_threshold": 0}, "slow_call_rate_threshold"),
        ({"call_timeout": 0}, "call_timeout"),
        ({"call_timeout": math.inf}, "call_timeout"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
        ({"max_timeout_duration": 1, "timeout_duration": 10}, "max_timeout_duration"),
        ({"backoff_jitter": "yes"}, "backoff_jitter"),
        ({"max_half_open_duration": 0}, "max_half_open_duration"),
        ({"failure_predicate": 3}, "failure_predicate"),
        ({"is_failure": "KeyError"}, "is_failure"),
    ],
)
def test_misconfiguration_fails_at_construction_naming_the_field(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        CircuitBreakerConfig(**options)


def test_a_count_window_smaller_than_minimum_calls_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"^sliding_window_size: .*minimum_calls \(5\), got 4"):
        CircuitBreakerConfig(failure_rate_threshold=0.5, sliding_window_size=4, minimum_calls=5)
    CircuitBreakerConfig(failure_rate_threshold=0.5, sliding_window_size=5, minimum_calls=5)
    # A time window holds any number of calls: no such bound.
    CircuitBreakerConfig(failure_rate_threshold=0.5, monitoring_window=1, minimum_calls=1000)


def test_expected_exceptions_must_be_exceptions_that_can_fail() -> None:
    import asyncio

    with pytest.raises(ValueError, match=r"^expected_exceptions\[1\]: .*CancelledError"):
        CircuitBreakerConfig(expected_exceptions=(Boom, asyncio.CancelledError))
    CircuitBreakerConfig(ignore_exceptions=(asyncio.CancelledError,))  # harmless there


async def test_to_dict_is_json_ready_while_forced_open(system: ActorSystem) -> None:
    import json

    breaker = make(system)
    await breaker.force_open_async()
    assert breaker.metrics.retry_after == math.inf
    data = breaker.get_metrics()
    assert data["retry_after"] is None
    assert data["forced"] is True
    json.dumps(data, allow_nan=False)
