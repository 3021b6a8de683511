"""The monitor API: health summary, report, performance figures and management, sync and async."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import pytest

from actors import ActorSystem, CircuitBreakerConfig, ManualClock
from actors.breaker import Breaker, BreakerActor
from actors.errors import ActorCrashedError, CircuitBreakerOpenError
from actors.messages import GetSnapshot, Reset
from actors.stats import DURATION_BOUNDS
from service.circuit_breaker import circuit_breaker, get_circuit_breaker
from service.monitor import CircuitBreakerMonitor, get_circuit_breaker_monitor

CONFIG = CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout_duration=10.0)


class CrashingActor(BreakerActor):
    """An actor whose reads, snapshots and resets raise: what the monitor must survive."""

    __slots__ = ()

    def read_now(self, reader: Any, now: float, epoch: float) -> Any:
        raise ActorCrashedError("snapshot failed")

    def _receive(self, message: Any) -> Any:
        if isinstance(message, GetSnapshot):
            raise ActorCrashedError("snapshot failed")
        if isinstance(message, Reset):
            raise ActorCrashedError("reset failed")
        return super()._receive(message)


class Unreachable(Breaker):
    """A breaker whose actor crashes on snapshots and resets."""

    __slots__ = ()

    def __init__(self, actor: BreakerActor) -> None:
        actor.__class__ = CrashingActor  # same layout (no slots of its own)
        actor._activate()  # in use: a dormant breaker has nothing to crash on
        super().__init__(actor)


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


def fail() -> None:
    raise ValueError("down")


def ok() -> int:
    return 1


def populate(system: ActorSystem, clock: ManualClock) -> None:
    """healthy: 'a' (2 quick successes); degraded: 'b' (1 failure in 2); failed: 'c' (open)."""

    def slow_ok() -> int:
        clock.advance(0.002)
        return 1

    a = system.breaker("a", CONFIG)
    a.call(slow_ok)
    a.call(slow_ok)
    b = system.breaker("b", CONFIG)
    b.call(ok)
    with pytest.raises(ValueError):
        b.call(fail)
    c = system.breaker("c", CONFIG)
    for _ in range(2):
        with pytest.raises(ValueError):
            c.call(fail)


def test_every_method_has_an_async_twin() -> None:
    public = {
        name
        for name, member in inspect.getmembers(CircuitBreakerMonitor, inspect.isfunction)
        if not name.startswith("_") and name not in ("aggregator", "close")
    }
    sync = {name for name in public if not name.endswith("_async")}
    assert {f"{name}_async" for name in sync} == public - sync
    for name in sync:
        assert inspect.iscoroutinefunction(getattr(CircuitBreakerMonitor, f"{name}_async"))
    assert {
        "get_health_summary",
        "log_health_report",
        "get_performance_metrics",
        "reset_all_circuit_breakers",
        "force_open_circuit_breaker",
        "force_close_circuit_breaker",
    } <= sync


@pytest.mark.anyio
async def test_health_summary(system: ActorSystem, clock: ManualClock) -> None:
    populate(system, clock)
    monitor = CircuitBreakerMonitor(system)
    summary = monitor.get_health_summary()
    assert summary == {
        "overall_health": "failed",
        "total_breakers": 3,
        "healthy": 1,
        "degraded": 1,
        "failed": 1,
        "error": 0,
        "degraded_threshold": 0.1,
        "circuit_breakers": {
            "a": {"state": "closed", "status": "healthy", "failure_rate": 0.0, "forced": False},
            "b": {"state": "closed", "status": "degraded", "failure_rate": 0.5, "forced": False},
            "c": {"state": "open", "status": "failed", "failure_rate": 1.0, "forced": False},
        },
    }
    assert await monitor.get_health_summary_async() == summary


@pytest.mark.anyio
async def test_forced_and_threshold_show_in_the_summary(
    system: ActorSystem, clock: ManualClock
) -> None:
    populate(system, clock)
    monitor = CircuitBreakerMonitor(system, degraded_threshold=0.6)
    assert await monitor.force_close_circuit_breaker_async("c") is True
    summary = await monitor.get_health_summary_async()
    assert summary["overall_health"] == "degraded"  # c is closed but its rate is 1.0
    assert summary["circuit_breakers"]["b"]["status"] == "healthy"  # 0.5 < 0.6
    assert summary["circuit_breakers"]["c"] == {
        "state": "closed",
        "status": "degraded",
        "failure_rate": 1.0,
        "forced": True,
    }


@pytest.mark.anyio
async def test_a_broken_breaker_is_reported_as_error_not_raised(
    system: ActorSystem, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    populate(system, clock)
    system.breaker("broken", CONFIG, cls=Unreachable)
    monitor = CircuitBreakerMonitor(system)
    with caplog.at_level(logging.WARNING, logger="service.monitor"):
        summary = monitor.get_health_summary()
    assert summary["overall_health"] == "error"
    assert summary["error"] == 1
    assert summary["circuit_breakers"]["broken"] == {
        "state": None,
        "status": "error",
        "failure_rate": 0.0,
        "forced": False,
        "error": "ActorCrashedError: snapshot failed",
    }
    assert "could not gather metrics of circuit breaker 'broken'" in caplog.text
    performance = await monitor.get_performance_metrics_async()
    assert performance["circuit_breakers"]["broken"] == {
        "error": "ActorCrashedError: snapshot failed"
    }


@pytest.mark.anyio
async def test_performance_metrics(system: ActorSystem, clock: ManualClock) -> None:
    populate(system, clock)
    with pytest.raises(CircuitBreakerOpenError):
        system.breaker("c").call(ok)
    monitor = CircuitBreakerMonitor(system)
    performance = monitor.get_performance_metrics()
    assert await monitor.get_performance_metrics_async() == performance
    a = performance["circuit_breakers"]["a"]
    assert {k: a[k] for k in ("state", "calls", "successes", "failures", "rejections")} == {
        "state": "closed",
        "calls": 2,
        "successes": 2,
        "failures": 0,
        "rejections": 0,
    }
    # Both calls took 2 ms (by the manual clock): every percentile is in 2 ms's bucket.
    upper = next(bound for bound in DURATION_BOUNDS if bound >= 0.002)
    lower = DURATION_BOUNDS[DURATION_BOUNDS.index(upper) - 1]
    for key in ("duration_p50", "duration_p95", "duration_p99"):
        assert lower <= a[key] <= upper
    assert performance["circuit_breakers"]["c"]["rejections"] == 1
    assert performance["circuit_breakers"]["c"]["failure_rate"] == 1.0
    totals = {k: v for k, v in performance.items() if k != "circuit_breakers"}
    assert totals == {
        "total_calls": 7,
        "total_successes": 3,
        "total_failures": 3,
        "total_ignored": 0,
        "total_rejections": 1,
        "overall_failure_rate": 0.5,
    }


@pytest.mark.anyio
async def test_performance_of_a_breaker_without_calls(system: ActorSystem) -> None:
    system.breaker("idle", CONFIG)
    performance = CircuitBreakerMonitor(system).get_performance_metrics()
    idle = performance["circuit_breakers"]["idle"]
    assert (idle["calls"], idle["duration_p50"], performance["overall_failure_rate"]) == (
        0,
        None,
        0.0,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("twin", ["sync", "async"])
async def test_log_health_report(
    system: ActorSystem, clock: ManualClock, caplog: pytest.LogCaptureFixture, twin: str
) -> None:
    populate(system, clock)
    monitor = CircuitBreakerMonitor(system)
    with caplog.at_level(logging.DEBUG, logger="service.monitor"):
        if twin == "sync":
            monitor.log_health_report("warning")
        else:
            await monitor.log_health_report_async(logging.WARNING)
    [record] = [r for r in caplog.records if r.name == "service.monitor"]
    assert record.levelno == logging.WARNING
    lines = record.getMessage().splitlines()
    assert lines[0] == (
        "Circuit breaker health: FAILED (3 breakers: 1 healthy, 1 degraded, 1 failed, 0 error)"
    )
    assert lines[1:] == [
        "  [ok  ] a: closed, rate 0.0%",
        "  [WARN] b: closed, rate 50.0%",
        "  [FAIL] c: open, rate 100.0%",
    ]


def test_log_level_must_be_a_level() -> None:
    with pytest.raises(ValueError, match="level"):
        CircuitBreakerMonitor(ActorSystem()).log_health_report("loud")


@pytest.mark.anyio
@pytest.mark.parametrize("twin", ["sync", "async"])
async def test_reset_all(system: ActorSystem, clock: ManualClock, twin: str) -> None:
    populate(system, clock)
    system.breaker("broken", CONFIG, cls=Unreachable)
    monitor = CircuitBreakerMonitor(system)
    if twin == "sync":
        results = monitor.reset_all_circuit_breakers()
    else:
        results = await monitor.reset_all_circuit_breakers_async()
    assert results == {"a": True, "b": True, "c": True, "broken": False}
    assert (await system.breaker("c").metrics_async()).state.value == "closed"
    assert (await system.breaker("b").metrics_async()).total_calls == 0


@pytest.mark.anyio
async def test_force_open_and_close_by_name(system: ActorSystem) -> None:
    breaker = system.breaker("x", CONFIG)
    monitor = CircuitBreakerMonitor(system)
    assert monitor.force_open_circuit_breaker("x") is True
    snapshot = await breaker.metrics_async()
    assert (snapshot.state.value, snapshot.forced) == ("open", True)
    assert await monitor.force_close_circuit_breaker_async("x") is True
    assert (await breaker.metrics_async()).state.value == "closed"
    assert await monitor.force_open_circuit_breaker_async("x") is True
    assert monitor.force_close_circuit_breaker("x") is True
    assert (await breaker.metrics_async()).state.value == "closed"


@pytest.mark.anyio
async def test_unknown_names_are_false_not_errors(
    system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = CircuitBreakerMonitor(system)
    with caplog.at_level(logging.WARNING, logger="service.monitor"):
        assert monitor.force_open_circuit_breaker("nope") is False
        assert monitor.force_close_circuit_breaker("nope") is False
        assert await monitor.force_open_circuit_breaker_async("nope") is False
        assert await monitor.force_close_circuit_breaker_async("nope") is False
    assert caplog.text.count("no circuit breaker named 'nope'") == 4


@pytest.mark.anyio
async def test_sync_methods_work_from_another_thread(
    system: ActorSystem, clock: ManualClock
) -> None:
    populate(system, clock)
    monitor = CircuitBreakerMonitor(system)
    summary: dict[str, Any] = await anyio.to_thread.run_sync(monitor.get_health_summary)
    assert summary["overall_health"] == "failed"
    assert await anyio.to_thread.run_sync(monitor.force_close_circuit_breaker, "c")
    assert (await monitor.get_health_summary_async())["circuit_breakers"]["c"]["forced"] is True


@pytest.mark.anyio
async def test_close_stops_the_aggregator(system: ActorSystem) -> None:
    monitor = CircuitBreakerMonitor(system)
    aggregator = monitor.aggregator()
    assert aggregator.subscription is not None
    monitor.close()
    assert aggregator.subscription is None
    assert monitor.aggregator() is not aggregator  # a later query starts a new one


def test_process_wide_monitor_covers_the_registry(unique_name: str) -> None:
    monitor = get_circuit_breaker_monitor()
    assert get_circuit_breaker_monitor() is monitor
    named = get_circuit_breaker(f"{unique_name}-named", CONFIG)

    @circuit_breaker(CONFIG, name=f"{unique_name}-decorated")
    def decorated() -> None:
        raise ValueError("down")

    for _ in range(2):
        with pytest.raises(ValueError):
            decorated()
    named.call(ok)
    summary = monitor.get_health_summary()
    entries = summary["circuit_breakers"]
    assert entries[f"{unique_name}-named"]["status"] == "healthy"
    assert entries[f"{unique_name}-decorated"]["status"] == "failed"
    assert monitor.reset_all_circuit_breakers()[f"{unique_name}-decorated"] is True
    performance = monitor.get_performance_metrics()
    assert performance["circuit_breakers"][f"{unique_name}-named"]["calls"] == 0  # reset


@pytest.mark.anyio
async def test_monitor_reads_leave_never_called_breakers_dormant(
    system: ActorSystem, clock: ManualClock
) -> None:
    populate(system, clock)
    idle = system.breaker("idle", CONFIG)
    monitor = CircuitBreakerMonitor(system)
    summary = monitor.get_health_summary()
    assert summary["circuit_breakers"]["idle"] == {
        "state": "closed",
        "status": "healthy",
        "failure_rate": 0.0,
        "forced": False,
    }
    performance = await monitor.get_performance_metrics_async()
    assert performance["circuit_breakers"]["idle"]["calls"] == 0
    assert performance["total_calls"] == 2 + 2 + 2
    assert monitor.reset_all_circuit_breakers()["idle"] is True
    assert idle._actor.dormant  # reading and resetting it allocated nothing


@pytest.mark.anyio
async def test_monitor_reads_include_outcomes_still_in_flight_to_the_actor(
    system: ActorSystem,
) -> None:
    breaker = system.breaker("busy", CONFIG)
    for _ in range(40):  # hot-path successes, not yet drained: the read must drain them first
        breaker.call(ok)
    performance = CircuitBreakerMonitor(system).get_performance_metrics()
    assert performance["circuit_breakers"]["busy"]["successes"] == 40
