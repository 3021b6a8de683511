"""Many callers at once: every call is counted exactly once, half-open never admits more than
``half_open_max_calls`` at a time, and cancelled probes never leave a breaker stuck.

Callers count what they saw (returned, failed, ignored or cancelled, rejected); the breaker's
counters must match those counts exactly, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from actors import (
    ActorSystem,
    Breaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    ManualClock,
)

HALF_OPEN = CircuitState.HALF_OPEN


class Boom(Exception):
    """Counts as a failure (the configs below expect it)."""


class Unexpected(Exception):
    """Outside ``expected_exceptions``: propagates and counts as ignored."""


MIXED = CircuitBreakerConfig(
    failure_threshold=5,
    success_threshold=3,
    timeout_duration=10.0,
    half_open_max_calls=3,
    expected_exceptions=(Boom,),
)
# Half-open for good: probes never close it (no failures are thrown at it either).
STAY_HALF_OPEN = CircuitBreakerConfig(
    failure_threshold=1,
    success_threshold=10**9,
    timeout_duration=10.0,
    half_open_max_calls=3,
    expected_exceptions=(Boom,),
)


def assert_counts_match(breaker: Breaker, seen: Counter[str], calls: int) -> None:
    metrics = breaker.metrics
    assert sum(seen.values()) == calls
    assert metrics.total_calls == calls
    assert metrics.total_calls == (
        metrics.successful_calls
        + metrics.failed_calls
        + metrics.ignored_calls
        + metrics.rejected_calls
    )
    assert metrics.successful_calls == seen["returned"]
    assert metrics.failed_calls == seen["failed"]
    assert metrics.ignored_calls == seen["ignored"] + seen["cancelled"]
    assert metrics.rejected_calls == seen["rejected"]


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms, to shake out interleavings."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class InFlight:
    """Counts callers inside the guarded function and the most seen at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()  # the test's own bookkeeping, not breaker state

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


async def trip_to_half_open(breaker: Breaker, clock: ManualClock) -> None:
    async def boom() -> None:
        raise Boom

    for _ in range(breaker.config.failure_threshold):
        with pytest.raises(Boom):
            await breaker.call_async(boom)
    clock.advance(breaker.config.timeout_duration)
    assert await breaker.state_async() is HALF_OPEN


# -- 10,000 tasks --------------------------------------------------------------------------


async def run_on_threads(worker: Callable[[int], None], count: int) -> None:
    """Run ``worker(seed)`` for seeds 0..count-1, each on a worker thread of its own."""
    limiter = anyio.CapacityLimiter(count)
    async with anyio.create_task_group() as group:
        for seed in range(count):
            group.start_soon(lambda s=seed: anyio.to_thread.run_sync(worker, s, limiter=limiter))


@pytest.mark.anyio
async def test_ten_thousand_tasks_are_each_counted_once(clock: ManualClock) -> None:
    rng = random.Random(1)
    seen: Counter[str] = Counter()
    calls = 10_000
    async with ActorSystem(clock=clock) as system:
        breaker = system.create_breaker("tasks", MIXED)

        async def one(kind: str, arrival: int, hops: int) -> None:
            for _ in range(arrival):  # arrivals spread over the run, not all at the start
                await anyio.sleep(0)
            if kind == "advance":  # time moves while other calls are in flight
                clock.advance(4.0)

            async def guarded() -> str:
                for _ in range(hops):
                    await anyio.sleep(0)
                if kind == "fail":
                    raise Boom
                if kind == "ignore":
                    raise Unexpected
                if kind == "cancel":
                    scope.cancel()
                    await anyio.sleep(0)
                return "ok"

            with anyio.CancelScope() as scope:
                try:
                    await breaker.call_async(guarded)
                except Boom:
                    seen["failed"] += 1
                except Unexpected:
                    seen["ignored"] += 1
                except CircuitBreakerOpenError:
                    seen["rejected"] += 1
                else:
                    seen["returned"] += 1
                return
            seen["cancelled"] += 1

        kinds = ["ok"] * 55 + ["fail"] * 30 + ["ignore"] * 8 + ["cancel"] * 5 + ["advance"] * 2
        async with anyio.create_task_group() as group:
            for _ in range(calls):
                group.start_soon(one, rng.choice(kinds), rng.randrange(30), rng.randrange(3))
        assert_counts_match(breaker, seen, calls)
        metrics = breaker.metrics
        assert metrics.state_transitions > 3  # the run went through every state, repeatedly
        assert metrics.rejected_calls > 0 and metrics.failed_calls > 0
        assert seen["cancelled"] > 0


@pytest.mark.anyio
async def test_half_open_never_admits_more_than_max_calls_among_many_tasks(
    clock: ManualClock,
) -> None:
    rng = random.Random(2)
    inside = InFlight()
    seen: Counter[str] = Counter()
    async with ActorSystem(clock=clock) as system:
        breaker = system.create_breaker("probes", STAY_HALF_OPEN)
        await trip_to_half_open(breaker, clock)

        async def one(kind: str, arrival: int, hops: int) -> None:
            for _ in range(arrival):
                await anyio.sleep(0)

            async def probe() -> str:
                inside.enter()
                try:
                    for _ in range(hops):
                        await anyio.sleep(0)
                    if kind == "ignore":
                        raise Unexpected
                    if kind == "cancel":
                        scope.cancel()
                        await anyio.sleep(0)
                    return "ok"
                finally:
                    inside.leave()

            with anyio.CancelScope() as scope:
                try:
                    await breaker.call_async(probe)
                except Unexpected:
                    seen["ignored"] += 1
                except CircuitBreakerOpenError as exc:
                    assert exc.retry_after == 0.0
                    assert exc.state is HALF_OPEN
                    seen["rejected"] += 1
                else:
                    seen["returned"] += 1
                return
            seen["cancelled"] += 1

        async with anyio.create_task_group() as group:
            for _ in range(10_000):
                kind = rng.choice(["ok", "ok", "ignore", "cancel"])
                group.start_soon(one, kind, rng.randrange(30), rng.randrange(4))
        assert inside.most == breaker.config.half_open_max_calls
        metrics = await breaker.metrics_async()
        assert metrics.state is HALF_OPEN
        assert metrics.half_open_calls_in_flight == 0
        assert seen["cancelled"] > 0 and seen["rejected"] > 0, seen
        # Not stuck: a fresh probe is admitted.
        assert await breaker.call_async(anyio.sleep, 0) is None


# -- 16 threads ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("fine_switching")
async def test_sixteen_threads_of_sync_calls_are_each_counted_once() -> None:
    # A real clock and a short break, so the breaker cycles through every state under load;
    # only the counts are asserted, and they hold whatever the timing.
    config = CircuitBreakerConfig(
        failure_threshold=3,
        success_threshold=2,
        timeout_duration=0.002,
        half_open_max_calls=2,
        expected_exceptions=(Boom,),
    )
    threads, per_thread = 16, 5_000
    tallies: list[Counter[str]] = []
    async with ActorSystem() as system:
        breaker = system.create_breaker("threads", config)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            seen: Counter[str] = Counter()
            for _ in range(per_thread):
                roll = rng.random()

                def guarded(roll: float = roll) -> str:
                    if roll < 0.10:
                        raise Boom
                    if roll < 0.18:
                        raise Unexpected
                    return "ok"

                try:
                    breaker.call(guarded)
                except Boom:
                    seen["failed"] += 1
                except Unexpected:
                    seen["ignored"] += 1
                except CircuitBreakerOpenError:
                    seen["rejected"] += 1
                else:
                    seen["returned"] += 1
            tallies.append(seen)

        await run_on_threads(worker, threads)
        total: Counter[str] = sum(tallies, Counter())
        assert_counts_match(breaker, total, threads * per_thread)
        metrics = breaker.metrics
        assert metrics.state_transitions > 0
        assert metrics.failed_calls > 0 and metrics.rejected_calls > 0


@pytest.mark.anyio
@pytest.mark.usefixtures("fine_switching")
async def test_half_open_never_admits_more_than_max_calls_among_threads(
    clock: ManualClock,
) -> None:
    inside = InFlight()
    tallies: list[Counter[str]] = []
    async with ActorSystem(clock=clock) as system:
        breaker = system.create_breaker("thread-probes", STAY_HALF_OPEN)
        await trip_to_half_open(breaker, clock)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            seen: Counter[str] = Counter()
            for _ in range(500):
                ignore = rng.random() < 0.3

                def probe(ignore: bool = ignore) -> str:
                    inside.enter()
                    try:
                        for _ in range(20):  # linger, so that other threads get in line
                            pass
                        if ignore:
                            raise Unexpected
                        return "ok"
                    finally:
                        inside.leave()

                try:
                    breaker.call(probe)
                except Unexpected:
                    seen["ignored"] += 1
                except CircuitBreakerOpenError:
                    seen["rejected"] += 1
                else:
                    seen["returned"] += 1
            tallies.append(seen)

        await run_on_threads(worker, 16)
        assert 1 <= inside.most <= breaker.config.half_open_max_calls
        metrics = await breaker.metrics_async()
        assert metrics.state is HALF_OPEN
        assert metrics.half_open_calls_in_flight == 0
        total: Counter[str] = sum(tallies, Counter())
        trips = breaker.config.failure_threshold
        assert metrics.successful_calls == total["returned"]
        assert metrics.rejected_calls == total["rejected"]
        assert metrics.ignored_calls == total["ignored"]
        assert metrics.total_calls == 16 * 500 + trips


# -- cancelled probes, across loops --------------------------------------------------------


def test_cancelled_probes_never_leave_the_breaker_stuck_across_loops() -> None:
    """Async callers on one loop, the breaker on another (the runtime's): a cancel can land
    while the caller waits for its admission, after it was granted, or inside the probe."""
    clock = ManualClock()
    rng = random.Random(3)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ActorSystem(clock=clock)) as system,
    ):
        breaker = system.create_breaker("far-probes", STAY_HALF_OPEN)

        def boom() -> None:
            raise Boom

        with pytest.raises(Boom):
            breaker.call(boom)
        portal.call(clock.advance, STAY_HALF_OPEN.timeout_duration)
        assert breaker.state is HALF_OPEN

        calls = 0

        async def attempt(hang: asyncio.Event) -> None:
            nonlocal calls
            calls += 1  # a task cancelled before its first step never calls at all
            await breaker.call_async(hang.wait)

        async def scenario() -> None:
            hang = asyncio.Event()
            for _ in range(15):
                tasks = [asyncio.create_task(attempt(hang)) for _ in range(4)]
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        # Each asyncio.run() ends with cancelled probes whose answers may still be on their way
        # to a loop that is closing.
        for _ in range(20):
            asyncio.run(scenario())
        # Give-backs of admissions nobody took are posted, not awaited: poll until settled.
        settled = portal.call(wait_for_no_probes, breaker)
        assert settled.half_open_calls_in_flight == 0
        assert settled.state is HALF_OPEN
        assert settled.total_calls == calls + 1
        assert settled.total_calls == settled.ignored_calls + settled.rejected_calls + 1

        async def probe() -> str:
            return "ok"

        assert asyncio.run(breaker.call_async(probe)) == "ok"


async def wait_for_no_probes(breaker: Breaker) -> Any:
    with anyio.fail_after(10):
        while True:
            metrics = await breaker.metrics_async()
            if metrics.half_open_calls_in_flight == 0:
                return metrics
            await anyio.sleep(0.001)
