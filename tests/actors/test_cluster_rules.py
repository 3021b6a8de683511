"""Tables of ``machine.step`` cases for the cluster messages: remote news, the probe lease and
the cluster's counts.  No event loop, no Redis: the link's side is tested in
``tests/service/cluster``."""

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
    RequestProbeLease,
    StartTimer,
    step,
)
from actors.messages import (
    Admission,
    Admit,
    ApplyRemoteState,
    ClusterCounts,
    Command,
    ForceOpen,
    ProbeLeaseDecided,
    RecordFailure,
    StateTimerFired,
    UseLocalCounts,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
EPOCH = 1_700_000_000.0
T0 = 100.0
CONFIG = CircuitBreakerConfig(failure_threshold=2, timeout_duration=10.0, success_threshold=1)


def run(
    data: BreakerData, message: Command, now: float = T0, config: CircuitBreakerConfig = CONFIG
) -> tuple[Any, list[Action]]:
    return step(data, message, now, EPOCH + now, config)


def events(actions: list[Action]) -> list[tuple[CircuitState, CircuitState, str]]:
    return [
        (a.event.from_state, a.event.to_state, a.event.reason)
        for a in actions
        if isinstance(a, Publish) and isinstance(a.event, StateChanged)
    ]


def clustered(state: CircuitState = CLOSED, config: CircuitBreakerConfig = CONFIG) -> BreakerData:
    data = BreakerData("svc")
    data.clustered = True
    if state is OPEN:
        for _ in range(config.failure_threshold):
            run(data, RecordFailure(generation=data.generation, probe=False, duration=0.01))
        assert data.state is OPEN
    return data


def admit(data: BreakerData, now: float = T0) -> Admission:
    reply, _ = run(data, Admit(), now)
    assert isinstance(reply, Admission)
    return reply


# -- ApplyRemoteState -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "news", "state", "published", "retry_after"),
    [
        # Another replica opened: follow, with its remaining break.
        (CLOSED, ApplyRemoteState(state="open", remaining=5.0), OPEN, [(CLOSED, OPEN)], 5.0),
        # Already open here: the break now ends when the cluster's does; no event.
        (OPEN, ApplyRemoteState(state="open", remaining=7.0), OPEN, [], 7.0),
        # Another replica holds the probe lease: reject while it may probe.
        (CLOSED, ApplyRemoteState(state="half_open", remaining=2.0), OPEN, [(CLOSED, OPEN)], 2.0),
        (OPEN, ApplyRemoteState(state="half_open", remaining=2.0), OPEN, [], 2.0),
        # Another replica closed: follow.
        (OPEN, ApplyRemoteState(state="closed"), CLOSED, [(OPEN, CLOSED)], None),
        (CLOSED, ApplyRemoteState(state="closed"), CLOSED, [], None),
        # Forced open elsewhere: forced here, no timer, retry_after inf.
        (CLOSED, ApplyRemoteState(state="open", forced=True), OPEN, [(CLOSED, OPEN)], math.inf),
        (OPEN, ApplyRemoteState(state="open", forced=True), OPEN, [], math.inf),
    ],
)
def test_remote_news_table(
    start: CircuitState,
    news: ApplyRemoteState,
    state: CircuitState,
    published: list[tuple[CircuitState, CircuitState]],
    retry_after: float | None,
) -> None:
    data = clustered(start)
    generation = data.generation
    _, actions = run(data, news, T0 + 1)
    assert data.state is state
    assert [(f, t) for f, t, _ in events(actions)] == published
    assert all(reason == "cluster" for _, _, reason in events(actions))
    assert data.generation > generation  # callers see the new gate
    if retry_after is None:
        assert admit(data, T0 + 1).granted
    else:
        rejected = admit(data, T0 + 1)
        assert not rejected.granted
        assert rejected.retry_after == retry_after
    timers = [a for a in actions if isinstance(a, StartTimer)]
    if retry_after is not None and math.isfinite(retry_after):
        assert timers[-1].deadline == T0 + 1 + retry_after
    else:
        assert timers == []


def test_remote_forced_open_on_an_open_breaker_cancels_its_timer() -> None:
    data = clustered(OPEN)
    _, actions = run(data, ApplyRemoteState(state="open", forced=True))
    assert CancelTimer() in actions
    assert data.forced and data.open_until is None


def test_remote_forced_close_holds_closed_against_local_failures() -> None:
    data = clustered(CLOSED)
    run(data, ApplyRemoteState(state="closed", forced=True))
    for _ in range(5):
        _, actions = run(data, RecordFailure(generation=data.generation, probe=False, duration=0))
        assert events(actions) == []
    assert (data.state, data.forced) == (CLOSED, True)


def test_remote_news_clears_a_pending_lease_request() -> None:
    data = clustered(OPEN)
    run(data, StateTimerFired(generation=data.generation), T0 + 10)
    assert data.lease_pending
    run(data, ApplyRemoteState(state="open", remaining=4.0), T0 + 10)
    assert not data.lease_pending


def test_remote_close_starts_fresh_windows() -> None:
    config = CircuitBreakerConfig(
        failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=2
    )
    data = clustered(CLOSED, config)
    run(data, RecordFailure(generation=data.generation, probe=False, duration=0), config=config)
    run(data, ApplyRemoteState(state="open", remaining=5.0), config=config)
    run(data, ApplyRemoteState(state="closed"), config=config)
    _, actions = run(
        data, RecordFailure(generation=data.generation, probe=False, duration=0), config=config
    )
    assert events(actions) == []  # 1 call in the fresh window, not 2 failures of 2


# -- the probe lease ------------------------------------------------------------------------


def test_the_end_of_a_clustered_break_asks_for_the_lease_once() -> None:
    data = clustered(OPEN)
    _, actions = run(data, StateTimerFired(generation=data.generation), T0 + 10)
    assert actions == [RequestProbeLease(data.generation)]
    assert data.state is OPEN  # still rejecting while the cluster decides
    rejected = admit(data, T0 + 10)
    assert (rejected.granted, rejected.retry_after) == (False, 0.0)
    _, again = run(data, Admit(), T0 + 10)
    assert again == []  # one request in flight is enough


def test_admission_past_the_deadline_asks_for_the_lease_without_the_timer() -> None:
    data = clustered(OPEN)
    reply, actions = run(data, Admit(), T0 + 11)
    assert not reply.granted
    assert actions == [RequestProbeLease(data.generation)]


@pytest.mark.parametrize(
    ("decision", "state", "reason", "retry_after"),
    [
        (ProbeLeaseDecided(generation=-1, granted=True), HALF_OPEN, "timeout_elapsed", None),
        (ProbeLeaseDecided(generation=-1, granted=False, retry_in=3.0), OPEN, None, 3.0),
    ],
)
def test_lease_decisions(
    decision: ProbeLeaseDecided, state: CircuitState, reason: str | None, retry_after: float | None
) -> None:
    data = clustered(OPEN)
    run(data, StateTimerFired(generation=data.generation), T0 + 10)
    decision = ProbeLeaseDecided(
        generation=data.generation, granted=decision.granted, retry_in=decision.retry_in
    )
    _, actions = run(data, decision, T0 + 10)
    assert data.state is state
    assert not data.lease_pending
    assert [r for _, _, r in events(actions)] == ([reason] if reason else [])
    reply = admit(data, T0 + 10)
    if retry_after is None:
        assert reply.granted and reply.probe
    else:
        assert not reply.granted and reply.retry_after == retry_after
        assert StartTimer(T0 + 10 + retry_after, data.generation) in actions


@pytest.mark.parametrize("granted", [True, False])
def test_a_decision_for_an_older_generation_is_ignored(granted: bool) -> None:
    data = clustered(OPEN)
    run(data, StateTimerFired(generation=data.generation), T0 + 10)
    old = data.generation
    run(data, ApplyRemoteState(state="open", remaining=5.0), T0 + 10)  # news since the request
    _, actions = run(data, ProbeLeaseDecided(generation=old, granted=granted), T0 + 10)
    assert actions == []
    assert data.state is OPEN


def test_a_decision_while_forced_open_is_ignored() -> None:
    data = clustered(OPEN)
    run(data, StateTimerFired(generation=data.generation), T0 + 10)
    run(data, ForceOpen(), T0 + 10)
    _, actions = run(data, ProbeLeaseDecided(generation=data.generation, granted=True), T0 + 10)
    assert actions == [] and data.state is OPEN


# -- the cluster's counts -------------------------------------------------------------------

RATES = CircuitBreakerConfig(
    failure_threshold=100,
    failure_rate_threshold=0.5,
    slow_call_duration=1.0,
    slow_call_rate_threshold=0.8,
    minimum_calls=10,
)


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        (ClusterCounts(successes=4, failures=6), "failure_rate"),
        (ClusterCounts(successes=5, failures=5), "failure_rate"),
        (ClusterCounts(successes=6, failures=4), None),
        (ClusterCounts(successes=2, failures=7), None),  # 9 < minimum_calls
        (ClusterCounts(successes=10, failures=0, slow=8), "slow_call_rate"),
        (ClusterCounts(successes=10, failures=0, slow=7), None),
    ],
)
def test_cluster_counts_table(counts: ClusterCounts, reason: str | None) -> None:
    data = clustered(CLOSED, RATES)
    _, actions = run(data, counts, config=RATES)
    assert [r for _, _, r in events(actions)] == ([reason] if reason else [])


def test_cluster_counts_replace_the_local_window_until_use_local_counts() -> None:
    data = clustered(CLOSED, RATES)
    run(data, ClusterCounts(successes=100, failures=0), config=RATES)
    for _ in range(10):  # 10 local failures: the cluster's 100 successes outweigh them
        _, actions = run(
            data, RecordFailure(generation=data.generation, probe=False, duration=0), config=RATES
        )
        assert events(actions) == []
    run(data, UseLocalCounts(), config=RATES)
    assert data.cluster_counts is None
    _, actions = run(
        data, RecordFailure(generation=data.generation, probe=False, duration=0), config=RATES
    )
    assert [r for _, _, r in events(actions)] == ["failure_rate"]  # 11 of 11 locally


def test_cluster_counts_never_open_a_forced_or_open_breaker() -> None:
    data = clustered(CLOSED, RATES)
    run(data, ApplyRemoteState(state="closed", forced=True), config=RATES)
    _, actions = run(data, ClusterCounts(successes=0, failures=50), config=RATES)
    assert events(actions) == []


def closed_again(config: CircuitBreakerConfig = RATES) -> tuple[BreakerData, float]:
    """A breaker that the cluster's failure rate opened and a remote close closed at T0 + 30;
    returns it and the epoch second of the close."""
    data = clustered(CLOSED, config)
    run(data, ClusterCounts(successes=0, failures=20, since=EPOCH + T0 - 9), T0, config)
    assert data.state is OPEN
    run(data, ApplyRemoteState(state="closed"), T0 + 30.5, config)
    assert data.state is CLOSED and data.cluster_counts is None
    return data, math.floor(EPOCH + T0 + 30.5)


def test_counts_of_a_window_that_began_before_the_close_are_not_used() -> None:
    data, closed = closed_again()
    stale = ClusterCounts(successes=0, failures=20, since=closed - 9)  # still the outage's
    _, actions = run(data, stale, T0 + 31, RATES)
    assert events(actions) == [] and data.cluster_counts is None
    # Meanwhile the fresh local window judges: 10 local failures of 10.
    for _ in range(10):
        _, actions = run(
            data, RecordFailure(generation=data.generation, probe=False, duration=0), T0 + 31, RATES
        )
    assert [r for _, _, r in events(actions)] == ["failure_rate"]


def test_counts_of_a_window_from_the_second_of_the_close_on_are_used() -> None:
    data, closed = closed_again()
    _, actions = run(data, ClusterCounts(successes=0, failures=20, since=closed), T0 + 41, RATES)
    assert [r for _, _, r in events(actions)] == ["failure_rate"]
