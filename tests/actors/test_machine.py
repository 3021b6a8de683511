"""Tables of ``machine.step`` cases: every rule of the breaker, no event loop, no clock.

Each test builds a :class:`BreakerData`, feeds it commands at chosen moments and checks the
reply, the actions and the counters.  ``now`` is monotonic seconds; the wall time handed to
``step`` is ``EPOCH + now`` so that epoch timestamps in snapshots are easy to predict.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from actors.config import CircuitBreakerConfig, CircuitState
from actors.events import StateChanged
from actors.machine import (
    Action,
    BreakerData,
    CancelTimer,
    Publish,
    StartTimer,
    record_fast_rejections,
    record_fast_successes,
    snapshot,
    step,
)
from actors.messages import (
    Admission,
    Admit,
    Command,
    ForceClose,
    ForceOpen,
    GetSnapshot,
    RecordFailure,
    RecordIgnored,
    RecordSuccess,
    Reset,
    StateTimerFired,
)
from actors.snapshot import CircuitBreakerMetrics

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
EPOCH = 1_700_000_000.0
T0 = 100.0
CONFIG = CircuitBreakerConfig(
    failure_threshold=3,
    success_threshold=2,
    timeout_duration=10.0,
    reset_timeout=30.0,
    monitoring_window=20.0,
    half_open_max_calls=2,
)


def run(
    data: BreakerData, message: Command, now: float = T0, config: CircuitBreakerConfig = CONFIG
) -> tuple[Any, list[Action]]:
    return step(data, message, now, EPOCH + now, config)


def fail(
    data: BreakerData,
    now: float = T0,
    *,
    probe: bool = False,
    generation: int | None = None,
    config: CircuitBreakerConfig = CONFIG,
) -> list[Action]:
    gen = data.generation if generation is None else generation
    return run(data, RecordFailure(generation=gen, probe=probe, duration=0.01), now, config)[1]


def succeed(
    data: BreakerData,
    now: float = T0,
    *,
    probe: bool = False,
    generation: int | None = None,
    config: CircuitBreakerConfig = CONFIG,
) -> list[Action]:
    gen = data.generation if generation is None else generation
    return run(data, RecordSuccess(generation=gen, probe=probe, duration=0.01), now, config)[1]


def ignore(
    data: BreakerData, now: float = T0, *, probe: bool = False, generation: int | None = None
) -> list[Action]:
    gen = data.generation if generation is None else generation
    return run(data, RecordIgnored(generation=gen, probe=probe, duration=0.01), now)[1]


def admit(data: BreakerData, now: float = T0, config: CircuitBreakerConfig = CONFIG) -> Admission:
    reply, _ = run(data, Admit(), now, config)
    assert isinstance(reply, Admission)
    return reply


def metrics(
    data: BreakerData, now: float = T0, config: CircuitBreakerConfig = CONFIG
) -> CircuitBreakerMetrics:
    reply, actions = run(data, GetSnapshot(), now, config)
    assert actions == []
    assert isinstance(reply, CircuitBreakerMetrics)
    return reply


def published(actions: list[Action]) -> list[StateChanged]:
    return [action.event for action in actions if isinstance(action, Publish)]


def opened(now: float = T0, config: CircuitBreakerConfig = CONFIG) -> BreakerData:
    data = BreakerData("m")
    for _ in range(config.failure_threshold):
        fail(data, now, config=config)
    assert data.state is OPEN
    return data


def half_opened(now: float = T0, config: CircuitBreakerConfig = CONFIG) -> BreakerData:
    data = opened(now, config)
    run(data, StateTimerFired(generation=data.generation), now + config.timeout_duration, config)
    assert data.state is HALF_OPEN
    return data


def assert_total_invariant(data: BreakerData) -> None:
    assert data.total_calls == (
        data.successful_calls + data.failed_calls + data.ignored_calls + data.rejected_calls
    )


# -- exception classification (config.is_failure decides failure vs ignored) ---------------


class Retryable(Exception):
    pass


class RateLimited(Retryable):
    pass


@pytest.mark.parametrize(
    ("expected", "ignored", "exc", "is_failure"),
    [
        ((Exception,), (), ValueError(), True),
        ((Exception,), (), KeyboardInterrupt(), False),  # not an instance of expected
        ((Retryable,), (), ValueError(), False),  # outside expected: ignored, propagates
        ((Retryable,), (), RateLimited(), True),  # subclasses count
        ((Retryable,), (RateLimited,), RateLimited(), False),  # ignore overrides expected
        ((Retryable,), (RateLimited,), Retryable(), True),
        ((Exception,), (ValueError,), ValueError(), False),
        ((Exception,), (ValueError,), TypeError(), True),
        ((ValueError, OSError), (), ConnectionError(), True),
        ((), (), ValueError(), False),
    ],
)
def test_is_failure_table(
    expected: tuple[type[BaseException], ...],
    ignored: tuple[type[BaseException], ...],
    exc: BaseException,
    is_failure: bool,
) -> None:
    config = CircuitBreakerConfig(expected_exceptions=expected, ignore_exceptions=ignored)
    assert config.counts_as_failure(exc) is is_failure


# -- CLOSED: counting and the threshold ---------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_threshold_consecutive_failures_open(threshold: int) -> None:
    config = CircuitBreakerConfig(failure_threshold=threshold, timeout_duration=7.5)
    data = BreakerData("m")
    for count in range(1, threshold):
        assert fail(data, config=config) == []
        assert data.state is CLOSED
        assert data.consecutive_failures == count
    generation = data.generation
    actions = fail(data, T0, config=config)
    assert data.state is OPEN
    assert data.generation == generation + 1
    assert actions[0] == StartTimer(deadline=T0 + 7.5, generation=data.generation)
    (event,) = published(actions)
    assert (event.from_state, event.to_state, event.reason) == (CLOSED, OPEN, "failure_threshold")
    assert event.at == EPOCH + T0
    assert event.generation == data.generation
    assert event.consecutive_failures == threshold
    assert event.failed_calls == threshold
    assert event.total_calls == threshold
    assert event.forced is False
    assert data.open_until == T0 + 7.5
    assert data.state_transitions == 1


@pytest.mark.parametrize(
    ("outcomes", "consecutive", "state"),
    [
        ("FF", 2, CLOSED),
        ("FFS", 0, CLOSED),
        ("FFSFF", 2, CLOSED),
        ("FFSFFF", 3, OPEN),
        ("FFI", 2, CLOSED),  # ignored is neither success nor failure
        ("FFIF", 3, OPEN),
        ("IIIIII", 0, CLOSED),
        ("FFfF", 1, CLOSED),  # f: a fast-path success (the CLOSED gate's channel) resets too
    ],
)
def test_consecutive_count_table(outcomes: str, consecutive: int, state: CircuitState) -> None:
    data = BreakerData("m")
    for outcome in outcomes:
        if outcome == "F":
            fail(data)
        elif outcome == "S":
            succeed(data)
        elif outcome == "f":
            record_fast_successes(data, [0.001], T0, EPOCH + T0, CONFIG)
        else:
            ignore(data)
    assert data.consecutive_failures == consecutive
    assert data.state is state
    assert data.ignored_calls == outcomes.count("I")
    assert_total_invariant(data)


@pytest.mark.parametrize(
    ("gap", "consecutive_after"),
    [
        (0.0, 3),
        (29.999, 3),  # just inside reset_timeout: the count goes on (and opens)
        (30.0, 1),  # reset_timeout without a failure: the count restarts
        (500.0, 1),
    ],
)
def test_reset_timeout_decays_consecutive_count(gap: float, consecutive_after: int) -> None:
    data = BreakerData("m")
    fail(data, T0)
    fail(data, T0 + 1)
    fail(data, T0 + 1 + gap)
    assert data.consecutive_failures == consecutive_after
    assert data.state is (OPEN if consecutive_after >= 3 else CLOSED)


def test_reset_timeout_decay_is_visible_in_snapshot_without_a_new_failure() -> None:
    data = BreakerData("m")
    fail(data, T0)
    fail(data, T0 + 5)
    assert metrics(data, T0 + 5 + 29.9).consecutive_failures == 2
    assert metrics(data, T0 + 5 + 30).consecutive_failures == 0


def test_decay_measures_from_the_last_failure_not_the_first() -> None:
    data = BreakerData("m")
    fail(data, T0)
    fail(data, T0 + 20)
    fail(data, T0 + 40)  # 40 s after the first, 20 s after the last: no decay
    assert data.state is OPEN


def test_forced_close_counts_failures_but_never_opens() -> None:
    data = BreakerData("m")
    run(data, ForceClose())
    for _ in range(10):
        assert published(fail(data)) == []
    assert data.state is CLOSED
    assert data.consecutive_failures == 10
    assert data.failed_calls == 10
    assert admit(data).granted


# -- OPEN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("elapsed", "retry_after"), [(0.0, 10.0), (2.5, 7.5), (9.999, 0.001)])
def test_open_rejects_with_retry_after(elapsed: float, retry_after: float) -> None:
    data = opened(T0)
    admission = admit(data, T0 + elapsed)
    assert admission.granted is False
    assert admission.state == "open"
    assert admission.retry_after == pytest.approx(retry_after)
    assert data.rejected_calls == 1
    assert data.total_calls == 4
    assert data.state is OPEN
    assert_total_invariant(data)


def test_fast_rejections_are_counted() -> None:
    data = opened()
    record_fast_rejections(data, 7)
    assert data.rejected_calls == 7
    assert data.total_calls == 10
    assert_total_invariant(data)


def test_timer_moves_open_to_half_open() -> None:
    data = opened(T0)
    generation = data.generation
    reply, actions = run(data, StateTimerFired(generation=generation), T0 + 10)
    assert reply is None
    assert data.state is HALF_OPEN
    assert data.generation == generation + 1
    assert data.open_until is None
    (event,) = published(actions)
    assert (event.from_state, event.to_state, event.reason) == (OPEN, HALF_OPEN, "timeout_elapsed")
    assert not any(isinstance(action, StartTimer) for action in actions)
    assert data.state_changed_at == T0 + 10


@pytest.mark.parametrize(
    "setup",
    [
        "older generation",  # e.g. a timer from a break that a probe failure replaced
        "after reset",
        "after force_open",
        "after force_close",
    ],
)
def test_stale_timer_is_ignored(setup: str) -> None:
    data = opened(T0)
    stale = data.generation
    if setup == "older generation":
        stale -= 1
    elif setup == "after reset":
        run(data, Reset(), T0 + 1)
    elif setup == "after force_open":
        run(data, ForceOpen(), T0 + 1)
    else:
        run(data, ForceClose(), T0 + 1)
    state, generation, transitions = data.state, data.generation, data.state_transitions
    reply, actions = run(data, StateTimerFired(generation=stale), T0 + 10)
    assert (reply, actions) == (None, [])
    assert (data.state, data.generation, data.state_transitions) == (
        state,
        generation,
        transitions,
    )


def test_timer_in_a_later_half_open_is_ignored() -> None:
    data = half_opened(T0)
    generation = data.generation
    # The timer of the *current* generation cannot be in HALF_OPEN, but a duplicate of the one
    # that already fired must do nothing.
    assert run(data, StateTimerFired(generation=generation - 1), T0 + 11) == (None, [])
    assert data.state is HALF_OPEN


def test_admission_past_the_deadline_does_not_need_the_timer() -> None:
    data = opened(T0)
    generation = data.generation
    admission = admit(data, T0 + 10)
    assert admission.granted is True
    assert admission.probe is True
    assert data.state is HALF_OPEN
    assert admission.generation == data.generation == generation + 1
    assert data.probes_in_flight == 1
    # ...and the timer that fires afterwards is stale.
    assert run(data, StateTimerFired(generation=generation), T0 + 10) == (None, [])
    assert data.state_transitions == 2


def test_admission_past_the_deadline_cancels_the_timer_and_publishes() -> None:
    data = opened(T0)
    _, actions = run(data, Admit(), T0 + 12)
    assert CancelTimer() in actions
    (event,) = published(actions)
    assert (event.from_state, event.to_state, event.reason) == (OPEN, HALF_OPEN, "timeout_elapsed")


def test_open_outcomes_of_calls_admitted_earlier_never_extend_the_break() -> None:
    data = BreakerData("m")
    early = data.generation
    for _ in range(3):
        fail(data, T0)
    open_until = data.open_until
    actions = fail(data, T0 + 5, generation=early)
    assert actions == []
    assert data.open_until == open_until
    assert data.failed_calls == 4
    assert data.state_transitions == 1


# -- HALF_OPEN ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_calls", [1, 2, 3])
def test_half_open_admits_at_most_max_calls(max_calls: int) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=10,
        timeout_duration=10.0,
        half_open_max_calls=max_calls,
    )
    data = half_opened(T0, config)
    now = T0 + 10
    grants = [admit(data, now, config) for _ in range(max_calls)]
    assert all(grant.granted and grant.probe for grant in grants)
    assert data.probes_in_flight == max_calls
    rejected = admit(data, now, config)
    assert (rejected.granted, rejected.retry_after, rejected.state) == (False, 0.0, "half_open")
    # A released slot (success or ignored) is admitted again.
    succeed(data, now, probe=True, config=config)
    assert admit(data, now, config).granted
    ignore(data, now, probe=True)
    assert admit(data, now, config).granted
    assert not admit(data, now, config).granted
    assert data.rejected_calls == 2
    assert_total_invariant(data)


def test_success_threshold_closes_and_resets_counts() -> None:
    data = half_opened(T0)
    now = T0 + 10
    admit(data, now)
    admit(data, now)
    assert published(succeed(data, now, probe=True)) == []
    assert data.state is HALF_OPEN
    assert data.probe_successes == 1
    actions = succeed(data, now + 1, probe=True)
    (event,) = published(actions)
    assert (event.from_state, event.to_state, event.reason) == (
        HALF_OPEN,
        CLOSED,
        "probes_succeeded",
    )
    assert data.state is CLOSED
    assert data.consecutive_failures == 0
    assert data.probes_in_flight == 0
    assert data.probe_successes == 0
    assert data.open_until is None
    # The failure count starts from zero: threshold - 1 failures do not re-open.
    fail(data, now + 2)
    fail(data, now + 2)
    assert data.state is CLOSED
    assert data.successful_calls == 2
    assert data.failed_calls == 5


def test_probe_successes_need_not_be_concurrent() -> None:
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=3, half_open_max_calls=1)
    data = half_opened(T0, config)
    now = T0 + config.timeout_duration
    for _ in range(2):
        assert admit(data, now, config).granted
        assert not admit(data, now, config).granted
        succeed(data, now, probe=True, config=config)
        assert data.state is HALF_OPEN
    admit(data, now, config)
    succeed(data, now, probe=True, config=config)
    assert data.state is CLOSED


def test_ignored_probe_neither_closes_nor_opens() -> None:
    data = half_opened(T0)
    now = T0 + 10
    for _ in range(5):
        admit(data, now)
        assert ignore(data, now, probe=True) == []
    assert data.state is HALF_OPEN
    assert data.probes_in_flight == 0
    assert data.probe_successes == 0
    assert data.ignored_calls == 5


def test_probe_failure_reopens_with_a_fresh_timer() -> None:
    data = half_opened(T0)
    now = T0 + 15
    admit(data, now)
    admit(data, now)
    succeed(data, now, probe=True)
    generation = data.generation
    actions = fail(data, now + 1, probe=True)
    assert data.state is OPEN
    assert data.generation == generation + 1
    assert data.open_until == now + 1 + 10
    assert StartTimer(deadline=now + 11, generation=data.generation) in actions
    (event,) = published(actions)
    assert (event.from_state, event.to_state, event.reason) == (HALF_OPEN, OPEN, "probe_failed")
    assert data.probes_in_flight == 0
    assert data.probe_successes == 0
    assert admit(data, now + 5).retry_after == pytest.approx(6.0)


# -- late outcomes ------------------------------------------------------------------------


def test_late_probe_outcomes_are_only_counted() -> None:
    data = half_opened(T0)
    now = T0 + 10
    first = admit(data, now)
    admit(data, now)
    fail(data, now, probe=True)  # re-opens: the other probe's outcome is now late
    run(data, StateTimerFired(generation=data.generation), now + 10)
    assert data.state is HALF_OPEN
    fresh = admit(data, now + 10)
    in_flight, transitions = data.probes_in_flight, data.state_transitions
    # A late success does not count towards the new half-open's threshold or free its slots.
    assert succeed(data, now + 10, probe=True, generation=first.generation) == []
    assert succeed(data, now + 10, probe=True, generation=first.generation) == []
    assert data.state is HALF_OPEN
    assert data.probe_successes == 0
    assert data.probes_in_flight == in_flight
    # A late failure does not re-open; a late ignored does not free a slot.
    assert fail(data, now + 10, probe=True, generation=first.generation) == []
    assert ignore(data, now + 10, probe=True, generation=first.generation) == []
    assert data.state is HALF_OPEN
    assert data.probes_in_flight == in_flight
    assert data.state_transitions == transitions
    assert data.successful_calls == 2
    assert data.failed_calls == 5
    assert data.ignored_calls == 1
    assert fresh.granted
    assert_total_invariant(data)


def test_late_failure_after_closing_does_not_count_towards_the_threshold() -> None:
    data = half_opened(T0)
    now = T0 + 10
    old = admit(data, now)
    admit(data, now)
    admit_gen = old.generation
    succeed(data, now, probe=True)
    ignore(data, now, probe=True)  # the second slot is freed
    admit(data, now)
    succeed(data, now, probe=True)
    assert data.state is CLOSED
    for _ in range(5):
        assert fail(data, now, generation=admit_gen) == []
    assert data.state is CLOSED
    assert data.consecutive_failures == 0


def test_late_failure_while_open_is_counted_only() -> None:
    data = opened(T0)
    old_generation = data.generation - 1
    assert fail(data, T0 + 3, generation=old_generation) == []
    assert data.failed_calls == 4
    assert data.last_failure_at == T0 + 3
    assert data.open_until == T0 + 10


def test_fast_successes_while_open_are_counted_only() -> None:
    data = opened(T0)
    record_fast_successes(data, [0.001, 0.002], T0 + 1, EPOCH + T0 + 1, CONFIG)
    assert data.state is OPEN
    assert data.successful_calls == 2
    assert data.consecutive_failures == 3
    assert_total_invariant(data)


# -- management ---------------------------------------------------------------------------


def test_force_open_holds_open_without_a_timer() -> None:
    data = BreakerData("m")
    _, actions = run(data, ForceOpen(), T0)
    assert data.state is OPEN
    assert data.forced
    assert not any(isinstance(action, StartTimer) for action in actions)
    (event,) = published(actions)
    assert (event.to_state, event.reason, event.forced) == (OPEN, "forced_open", True)
    admission = admit(data, T0 + 10_000)
    assert admission.granted is False
    assert math.isinf(admission.retry_after)
    assert data.state is OPEN
    assert metrics(data, T0 + 10_000).forced is True


def test_force_open_while_open_cancels_the_timer_without_an_event() -> None:
    data = opened(T0)
    generation = data.generation
    _, actions = run(data, ForceOpen(), T0 + 1)
    assert actions == [CancelTimer()]
    assert data.forced
    assert data.open_until is None
    assert data.generation == generation + 1
    assert data.state_transitions == 1
    assert math.isinf(admit(data, T0 + 100).retry_after)


@pytest.mark.parametrize("maker", [opened, half_opened])
def test_force_close_holds_closed(maker: Any) -> None:
    data = maker(T0)
    _, actions = run(data, ForceClose(), T0 + 10)
    assert data.state is CLOSED
    assert data.forced
    (event,) = published(actions)
    assert (event.to_state, event.reason, event.forced) == (CLOSED, "forced_close", True)
    if maker is opened:
        assert CancelTimer() in actions


def test_force_close_while_closed_publishes_nothing_but_bumps_the_generation() -> None:
    data = BreakerData("m")
    _, actions = run(data, ForceClose())
    assert actions == []
    assert data.forced
    assert data.generation == 1
    assert data.state_transitions == 0


@pytest.mark.parametrize("first", [ForceOpen(), ForceClose()])
def test_the_other_force_call_replaces_a_forced_state(first: Command) -> None:
    data = BreakerData("m")
    run(data, first)
    other = ForceClose() if isinstance(first, ForceOpen) else ForceOpen()
    run(data, other)
    assert data.forced
    assert data.state is (CLOSED if isinstance(other, ForceClose) else OPEN)


@pytest.mark.parametrize("maker", ["closed", "open", "half_open", "forced_open", "forced_close"])
def test_reset_returns_to_closed_with_counts_cleared(maker: str) -> None:
    if maker == "closed":
        data = BreakerData("m")
        fail(data)
        fail(data)
    elif maker == "open":
        data = opened()
    elif maker == "half_open":
        data = half_opened()
        admit(data, T0 + 10)
    else:
        data = BreakerData("m")
        fail(data)
        run(data, ForceOpen() if maker == "forced_open" else ForceClose())
    record_fast_rejections(data, 2)
    was = data.state
    generation = data.generation
    _, actions = run(data, Reset(), T0 + 50)
    assert data.state is CLOSED
    assert data.forced is False
    assert data.generation == generation + 1
    assert (data.total_calls, data.successful_calls, data.failed_calls) == (0, 0, 0)
    assert (data.ignored_calls, data.rejected_calls, data.consecutive_failures) == (0, 0, 0)
    assert data.probes_in_flight == 0
    assert data.open_until is None
    events = published(actions)
    if was is CLOSED:
        assert events == []
    else:
        (event,) = events
        assert (event.from_state, event.to_state, event.reason) == (was, CLOSED, "reset")
        assert CancelTimer() in actions if was is OPEN else True
    snap = metrics(data, T0 + 50)
    assert snap.failure_rate == 0.0
    assert snap.duration_p50 is None
    # Full threshold needed again.
    fail(data, T0 + 50)
    fail(data, T0 + 50)
    assert data.state is CLOSED


def test_reset_makes_in_flight_outcomes_late() -> None:
    data = BreakerData("m")
    before = data.generation
    fail(data)
    run(data, Reset())
    for _ in range(5):
        fail(data, generation=before)
    assert data.state is CLOSED
    assert data.consecutive_failures == 0
    assert data.failed_calls == 5


def test_unknown_command_is_a_type_error() -> None:
    class Bogus(Command, frozen=True):
        pass

    with pytest.raises(TypeError, match="Bogus"):
        run(BreakerData("m"), Bogus())


# -- failure rate over the monitoring window ----------------------------------------------


def test_failure_rate_over_the_monitoring_window() -> None:
    config = CircuitBreakerConfig(failure_threshold=100, monitoring_window=10.0)
    data = BreakerData("m")
    assert metrics(data, T0, config).failure_rate == 0.0
    for _ in range(3):
        fail(data, T0, config=config)
    succeed(data, T0, config=config)
    ignore(data, T0)  # neither: not in the rate
    record_fast_rejections(data, 5)  # neither
    assert metrics(data, T0, config).failure_rate == pytest.approx(0.75)
    record_fast_successes(data, [0.001] * 4, T0 + 5, EPOCH + T0 + 5, config)
    assert metrics(data, T0 + 5, config).failure_rate == pytest.approx(3 / 8)
    assert metrics(data, T0 + 9, config).failure_rate == pytest.approx(3 / 8)
    # The first second's outcomes leave the window; the later successes remain.
    assert metrics(data, T0 + 10, config).failure_rate == 0.0
    fail(data, T0 + 14, config=config)
    assert metrics(data, T0 + 14, config).failure_rate == pytest.approx(1 / 5)
    # A window of 10 s at T0 + 15 no longer holds what happened at T0 + 5.
    assert metrics(data, T0 + 15, config).failure_rate == 1.0
    assert metrics(data, T0 + 100, config).failure_rate == 0.0


def test_failure_rate_counts_late_outcomes() -> None:
    data = opened(T0)
    fail(data, T0 + 1, generation=0)
    assert metrics(data, T0 + 1).failure_rate == 1.0


# -- snapshot ------------------------------------------------------------------------------


def test_snapshot_of_a_fresh_breaker() -> None:
    snap = metrics(BreakerData("fresh"), T0)
    assert snap == CircuitBreakerMetrics(
        name="fresh",
        state=CLOSED,
        forced=False,
        total_calls=0,
        successful_calls=0,
        failed_calls=0,
        ignored_calls=0,
        rejected_calls=0,
        consecutive_failures=0,
        failure_rate=0.0,
        state_transitions=0,
        last_failure_time=None,
        last_success_time=None,
        state_changed_at=None,
        half_open_calls_in_flight=0,
        retry_after=None,
        duration_p50=None,
        duration_p95=None,
        duration_p99=None,
    )


def test_snapshot_fields_follow_the_story() -> None:
    data = BreakerData("story")
    record_fast_successes(data, [0.010, 0.020], T0, EPOCH + T0, CONFIG)
    for moment in (T0 + 1, T0 + 2, T0 + 3):
        fail(data, moment)
    record_fast_rejections(data, 1)
    ignore(data, T0 + 3)
    snap = metrics(data, T0 + 4)
    assert snap.state is OPEN
    assert snap.total_calls == 7
    assert (snap.successful_calls, snap.failed_calls) == (2, 3)
    assert (snap.ignored_calls, snap.rejected_calls) == (1, 1)
    assert snap.consecutive_failures == 3
    assert snap.failure_rate == pytest.approx(3 / 5)
    assert snap.state_transitions == 1
    assert snap.last_success_time == EPOCH + T0
    assert snap.last_failure_time == EPOCH + T0 + 3
    assert snap.state_changed_at == EPOCH + T0 + 3
    assert snap.retry_after == pytest.approx(9.0)
    assert snap.half_open_calls_in_flight == 0
    assert snap.duration_p50 is not None and 0.005 < snap.duration_p50 < 0.03
    assert snap.duration_p99 is not None and snap.duration_p99 >= snap.duration_p50
    # retry_after never goes negative once the break is over but no one has asked yet.
    assert metrics(data, T0 + 100).retry_after == 0.0
    run(data, StateTimerFired(generation=data.generation), T0 + 13)
    admit(data, T0 + 13)
    half = metrics(data, T0 + 13)
    assert (half.state, half.retry_after, half.half_open_calls_in_flight) == (HALF_OPEN, None, 1)
    assert half.state_changed_at == EPOCH + T0 + 13
    assert half.state_transitions == 2


def test_snapshot_direct_matches_step() -> None:
    data = opened(T0)
    assert snapshot(data, T0 + 1, EPOCH + T0 + 1, CONFIG) == metrics(data, T0 + 1)


# -- rate policies: evaluated after every outcome (issue 13, item 11) ------------------------

RATE = {"failure_threshold": 100, "failure_rate_threshold": 0.75, "minimum_calls": 4}
SLOW_RATE = {
    "failure_threshold": 100,
    "slow_call_duration": 1.0,
    "slow_call_rate_threshold": 0.75,
    "minimum_calls": 4,
}
WINDOWS = {"time": {"monitoring_window": 20.0}, "count": {"sliding_window_size": 4}}


def feed(
    data: BreakerData, outcomes: str, config: CircuitBreakerConfig, now: float = T0
) -> list[StateChanged]:
    """F: failure, S: success, W: slow success (2 s), s: fast success by the batched hot path.
    Returns the events published."""
    events: list[StateChanged] = []
    for outcome in outcomes:
        if outcome == "s":
            actions = record_fast_successes(data, [0.01], now, EPOCH + now, config)
        else:
            duration = 2.0 if outcome == "W" else 0.01
            message: Command = (
                RecordFailure(generation=data.generation, probe=False, duration=duration)
                if outcome == "F"
                else RecordSuccess(generation=data.generation, probe=False, duration=duration)
            )
            actions = run(data, message, now, config)[1]
        events += published(actions)
    return events


@pytest.mark.parametrize("window", ["time", "count"])
@pytest.mark.parametrize(
    ("policy", "outcomes", "reason"),
    [
        (RATE, "FFFS", "failure_rate"),  # the 4th call is a success: 3/4 reached on it
        (RATE, "FFFs", "failure_rate"),  # the same through the batched hot path
        (RATE, "FFS", None),  # below minimum_calls
        (RATE, "FFSS", None),  # 2/4 < 0.75
        (RATE, "SFFF", "failure_rate"),  # reached on a failure, as before
        (SLOW_RATE, "WWWS", "slow_call_rate"),  # three slow calls, then one fast
        (SLOW_RATE, "WWWs", "slow_call_rate"),
        (SLOW_RATE, "WWSS", None),
        (SLOW_RATE, "SWWW", "slow_call_rate"),
    ],
)
def test_a_rate_reached_on_any_outcome_opens_the_breaker(
    window: str, policy: dict[str, Any], outcomes: str, reason: str | None
) -> None:
    config = CircuitBreakerConfig(**policy, **WINDOWS[window])
    data = BreakerData("m")
    events = feed(data, outcomes, config)
    assert [event.reason for event in events] == ([reason] if reason else [])
    assert data.state is (OPEN if reason else CLOSED)


@pytest.mark.parametrize("window", ["time", "count"])
def test_a_batch_of_successes_opens_where_the_window_first_holds_minimum_calls(
    window: str,
) -> None:
    # Rates peak where the window reaches minimum_calls: 3/4 there, 3/6 after the batch.
    shape = {"sliding_window_size": 6} if window == "count" else WINDOWS[window]
    config = CircuitBreakerConfig(**RATE, **shape)
    data = BreakerData("m")
    feed(data, "FFF", config)
    actions = record_fast_successes(data, [0.01, 0.01, 0.01], T0, EPOCH + T0, config)
    assert [event.reason for event in published(actions)] == ["failure_rate"]
    assert data.state is OPEN
    assert data.successful_calls == 3  # all counted; those after the trip are late


def test_a_success_in_a_time_window_that_forgot_old_successes_opens() -> None:
    config = CircuitBreakerConfig(**RATE, monitoring_window=10.0)
    data = BreakerData("m")
    feed(data, "SSSSSS", config, T0)
    feed(data, "FFF", config, T0 + 5)  # 3/9
    assert data.state is CLOSED
    events = feed(data, "S", config, T0 + 10)  # the first six have left: 3/4
    assert [event.reason for event in events] == ["failure_rate"]


def test_forced_closed_never_opens_on_a_rate_reached_on_a_success() -> None:
    config = CircuitBreakerConfig(**RATE)
    data = BreakerData("m")
    run(data, ForceClose(), T0, config)
    assert feed(data, "FFFS", config) == []
    assert data.state is CLOSED


# -- recovery starts a closed breaker with fresh windows (issue 13, item 12) ----------------

RECOVERY = {
    "failure_threshold": 100,
    "failure_rate_threshold": 0.5,
    "success_threshold": 1,
    "timeout_duration": 10.0,
}


def recovered(config: CircuitBreakerConfig) -> tuple[BreakerData, float, int]:
    """A breaker opened by its failure rate and closed by a probe; returns it, the time of
    the close, and the generation of a call admitted before the outage."""
    data = BreakerData("m")
    before = data.generation
    feed(data, "SFF", config)  # 2/3: OPEN by rate
    assert data.state is OPEN
    later = T0 + config.timeout_duration
    run(data, StateTimerFired(generation=data.generation), later, config)
    assert admit(data, later, config).probe
    events = published(succeed(data, later, probe=True, config=config))
    assert [(event.to_state, event.reason) for event in events] == [(CLOSED, "probes_succeeded")]
    return data, later, before


@pytest.mark.parametrize("window", [{}, {"sliding_window_size": 10}])
def test_a_recovered_breaker_starts_with_fresh_windows(window: dict[str, Any]) -> None:
    config = CircuitBreakerConfig(**RECOVERY, minimum_calls=2, **window)
    data, later, _ = recovered(config)
    assert metrics(data, later, config).failure_rate == 0.0
    # One failure right after recovery: the window holds 1 < minimum_calls calls, not the
    # outage's failures as well.
    assert published(fail(data, later, config=config)) == []
    assert data.state is CLOSED
    assert metrics(data, later, config).failure_rate == 1.0
    assert data.failed_calls == 3  # the counters since the last reset are kept


@pytest.mark.parametrize("window", [{}, {"sliding_window_size": 10}])
def test_a_late_failure_after_recovery_is_counted_but_never_reopens(
    window: dict[str, Any],
) -> None:
    config = CircuitBreakerConfig(**RECOVERY, minimum_calls=1, **window)
    data, later, before = recovered(config)
    assert published(fail(data, later, generation=before, config=config)) == []
    assert data.state is CLOSED
    assert metrics(data, later, config).failure_rate == 1.0  # in the new window
    events = published(fail(data, later, config=config))  # a current failure judges it
    assert [event.reason for event in events] == ["failure_rate"]


def test_a_forced_close_keeps_the_windows_and_a_reset_clears_them() -> None:
    config = CircuitBreakerConfig(**RECOVERY, minimum_calls=2)
    data = BreakerData("m")
    feed(data, "SFF", config)
    assert data.state is OPEN
    run(data, ForceClose(), T0 + 1, config)
    assert metrics(data, T0 + 1, config).failure_rate == pytest.approx(2 / 3)
    assert published(fail(data, T0 + 1, config=config)) == []  # forced: rates never open it
    run(data, Reset(), T0 + 2, config)
    assert metrics(data, T0 + 2, config).failure_rate == 0.0
