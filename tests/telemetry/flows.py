"""The story every telemetry test tells: one breaker through closed -> open -> half_open ->
closed under a manual clock, with one call rejected inside the caller's span, and what the
exported metrics must then say (in a form both the SDK's data and OTLP protobufs convert to)."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, NamedTuple

import pytest
from opentelemetry.trace import Tracer

from actors import ActorSystem, CircuitBreakerConfig, CircuitBreakerOpenError, ManualClock
from telemetry import names
from telemetry.metrics import EXPORT_BOUNDS

CONFIG = CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout_duration=10.0)
OK_SECONDS = 0.002
FAIL_SECONDS = 0.003

#: Metric name -> {frozenset of attribute pairs -> value}
Points = dict[str, dict[frozenset[tuple[str, Any]], Any]]


class Outage(NamedTuple):
    """Epoch seconds of the outage's moments, by the manual clock."""

    opened_at: float
    half_open_at: float
    closed_at: float


async def drive_outage(
    system: ActorSystem, clock: ManualClock, tracer: Tracer, name: str
) -> Outage:
    """1 success, 2 failures (open), 1 rejection inside span "request", the break, 1 probe
    success (closed).  Calls take OK_SECONDS / FAIL_SECONDS by the clock."""
    breaker = system.breaker(name, CONFIG)

    def ok() -> str:
        clock.advance(OK_SECONDS)
        return "ok"

    async def ok_async() -> str:
        return ok()

    def fail() -> None:
        clock.advance(FAIL_SECONDS)
        raise ValueError("down")

    breaker.call(ok)
    for _ in range(CONFIG.failure_threshold):
        with pytest.raises(ValueError):
            breaker.call(fail)
    opened_at = clock.wall(clock.now())
    with tracer.start_as_current_span("request"), pytest.raises(CircuitBreakerOpenError):
        breaker.call(ok)
    clock.advance(CONFIG.timeout_duration)
    half_open_at = clock.wall(clock.now())
    assert await breaker.call_async(ok_async) == "ok"
    closed_at = clock.wall(clock.now())
    await breaker.metrics_async()  # drain the breaker: every event is on the bus
    return Outage(opened_at, half_open_at, closed_at)


def pairs(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def expected_points(name: str) -> Points:
    """The number metrics after :func:`drive_outage` (the histogram is checked apart)."""
    calls = {
        pairs(**{names.NAME: name, names.OUTCOME: outcome}): count
        for outcome, count in (("success", 2), ("failure", 2), ("ignored", 0), ("rejected", 1))
    }
    transitions = {
        pairs(
            **{
                names.NAME: name,
                names.TRANSITION_FROM: from_state,
                names.TRANSITION_TO: to_state,
                names.TRANSITION_REASON: reason,
            }
        ): 1
        for from_state, to_state, reason in (
            ("closed", "open", "failure_threshold"),
            ("open", "half_open", "timeout_elapsed"),
            ("half_open", "closed", "probes_succeeded"),
        )
    }
    status = {
        pairs(**{names.NAME: name, names.STATE: state}): int(state == "closed")
        for state in ("closed", "open", "half_open")
    }
    return {
        names.CALLS: calls,
        names.TRANSITIONS: transitions,
        names.STATUS: status,
        names.FAILURE_RATE: {pairs(**{names.NAME: name}): 0.0},  # the close started afresh
        names.DROPPED_EVENTS: {pairs(): 0},
    }


# Which calls the histogram sees: the plain CLOSED path times its first call and then one in
# 16 (actors.breaker.SAMPLE_MASK), so of the story's three CLOSED calls only the first success
# is timed; the half-open probe takes the slow path, which always is.
def expected_buckets() -> list[int]:
    buckets = [0] * (len(EXPORT_BOUNDS) + 1)
    buckets[bisect_left(EXPORT_BOUNDS, OK_SECONDS)] += 2
    return buckets


EXPECTED_DURATION_COUNT = 2
EXPECTED_DURATION_SUM = 2 * OK_SECONDS


def ns(epoch_seconds: float) -> int:
    return int(epoch_seconds * 1e9)
