"""The breaker's rules, as a deterministic step function.

``step(data, message, now, epoch, config)`` applies one command to a breaker's counters and
returns the reply for the asker and the actions the actor must perform (publish an event, arm or
cancel the break timer).  It never awaits, never reads a clock (``now`` is monotonic seconds,
``epoch`` the matching wall time, both read once per mailbox drain by the actor) and never does
I/O, so every rule can be tested with a table and no event loop.

Design note: ``step`` mutates the :class:`BreakerData` it is given instead of returning a new
one.  Successes reach the machine once per guarded call, and copying a twenty-field record per
call would cost more than the call itself; the data object belongs to exactly one actor, so
nothing else can observe the mutation half-done.

The generation
--------------
``data.generation`` grows by one every time the gate callers see changes (a state change, a
forced flag, a reset).  Every admission carries the generation it was granted under, and so does
the outcome message that follows.  An outcome whose generation is not current is *late*: the
call started under an earlier state.  Late outcomes update counters and nothing else; they never
re-open a breaker, extend a break, consume a probe, or publish an event.
"""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec

from actors.config import CircuitBreakerConfig, CircuitState
from actors.events import ConfigChanged, Event, StateChanged
from actors.messages import (
    Admission,
    Admit,
    ApplyRemoteState,
    ClusterCounts,
    Command,
    ForceClose,
    ForceOpen,
    GetSnapshot,
    ProbeLeaseDecided,
    Reconfigure,
    RecordFailure,
    RecordIgnored,
    RecordSuccess,
    Reset,
    StateTimerFired,
    UseLocalCounts,
)
from actors.snapshot import CircuitBreakerMetrics
from actors.stats import CountWindow, DurationHistogram, RateWindow

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN


class Publish(msgspec.Struct, frozen=True):
    event: Event


class StartTimer(msgspec.Struct, frozen=True):
    """Arm the state timer: post ``StateTimerFired(generation)`` at ``deadline`` (replacing any
    timer already armed)."""

    deadline: float
    generation: int


class CancelTimer(msgspec.Struct, frozen=True):
    pass


class ApplyConfig(msgspec.Struct, frozen=True):
    """Use ``config`` from the next message on."""

    config: CircuitBreakerConfig


class RequestProbeLease(msgspec.Struct, frozen=True):
    """Cluster mode: ask the cluster whether this replica may probe for ``generation``."""

    generation: int


Action = Publish | StartTimer | CancelTimer | ApplyConfig | RequestProbeLease


class BreakerData:
    """Everything one breaker knows; owned by its actor alone."""

    __slots__ = (
        "break_duration",
        "cluster_counts",
        "clustered",
        "consecutive_failures",
        "count_window",
        "durations",
        "failed_calls",
        "forced",
        "generation",
        "ignored_calls",
        "last_failure_at",
        "last_success_at",
        "lease_pending",
        "name",
        "open_until",
        "probe_successes",
        "probes_in_flight",
        "rejected_calls",
        "rng",
        "state",
        "state_changed_at",
        "state_transitions",
        "successful_calls",
        "total_calls",
        "window",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = CLOSED
        self.forced = False
        self.generation = 0
        self.open_until: float | None = None
        self.probes_in_flight = 0
        self.probe_successes = 0
        self.consecutive_failures = 0
        self.state_transitions = 0
        self.last_failure_at: float | None = None
        self.last_success_at: float | None = None
        self.state_changed_at: float | None = None
        self.window: RateWindow | None = None
        self.count_window: CountWindow | None = None
        self.durations: DurationHistogram | None = None
        self.break_duration: float | None = None  # the backed-off break; None = the base
        self.rng: random.Random | None = None  # for jitter, created when first needed
        # Cluster mode (see actors.cluster): the break ends with a probe lease request.
        self.clustered = False
        self.lease_pending = False
        self.cluster_counts: tuple[int, int, int] | None = None
        self._clear_counts()

    def _clear_counts(self) -> None:
        self.total_calls = 0
        self.successful_calls = 0
        self.failed_calls = 0
        self.ignored_calls = 0
        self.rejected_calls = 0

    def histogram(self) -> DurationHistogram:
        if self.durations is None:
            self.durations = DurationHistogram()
        return self.durations

    def rate_window(self, config: CircuitBreakerConfig) -> RateWindow:
        if self.window is None:
            self.window = RateWindow(config.monitoring_window)
        return self.window

    def window_of_calls(self, config: CircuitBreakerConfig) -> CountWindow:
        assert config.sliding_window_size is not None
        if self.count_window is None:
            self.count_window = CountWindow(config.sliding_window_size)
        return self.count_window


# -- the hot-path records (no message object, no actions) ------------------------------------


def record_fast_successes(
    data: BreakerData,
    durations: list[float],
    now: float,
    epoch: float,
    config: CircuitBreakerConfig,
    *,
    untimed: int = 0,
) -> list[Action]:
    """Apply a batch of successes admitted by the CLOSED gate: the timed ones' durations and
    the number of untimed ones (see ``actors.breaker.SAMPLE_MASK``).

    These carry no generation (see ``actors.breaker``): in CLOSED a success restarts the
    consecutive-failure count; in any other state a success that was admitted while CLOSED is
    late and only counted.  With a rate policy the rates are evaluated as after any outcome
    (see ``_check_rates``), but once per batch, plus once where the window first holds
    ``minimum_calls``: successes only lower the failure rate from there, so that is where
    it peaks.
    """
    count = len(durations) + untimed
    data.total_calls += count
    data.successful_calls += count
    data.last_success_at = now
    if durations:
        data.histogram().record_run(durations)
    actions: list[Action] = []
    if data.state is not CLOSED:
        _window_successes(data, now, config, durations, untimed)
        return actions
    data.consecutive_failures = 0
    if not config.uses_rate_window:
        _window_successes(data, now, config, durations, untimed)
        return actions
    # A batch of one has nothing to split: skip reading the window twice.
    head = config.minimum_calls - _window_totals(data, now, config)[0] if count > 1 else 0
    if 0 < head < count:
        timed = min(head, len(durations))
        _window_successes(data, now, config, durations[:timed], head - timed)
        _check_rates(data, now, epoch, config, actions)
        durations, untimed = durations[timed:], untimed - (head - timed)
    _window_successes(data, now, config, durations, untimed)
    _check_rates(data, now, epoch, config, actions)
    return actions


def _window_successes(
    data: BreakerData,
    now: float,
    config: CircuitBreakerConfig,
    durations: list[float],
    untimed: int,
) -> None:
    """Put a run of successes in the rate windows."""
    count = len(durations) + untimed
    slow_after = config.slow_call_duration
    slow = 0 if slow_after is None else sum(1 for duration in durations if duration > slow_after)
    data.rate_window(config).add(now, count, 0, slow)
    if config.sliding_window_size is not None:
        window = data.window_of_calls(config)
        if slow_after is None:
            for _ in range(min(count, config.sliding_window_size)):
                window.add(0)
        else:
            # With a slow-call policy every call is timed (untimed == 0).
            for duration in durations[-config.sliding_window_size :]:
                window.add(CountWindow.SLOW if duration > slow_after else 0)


def record_fast_rejections(data: BreakerData, count: int) -> None:
    """Apply rejections made by the OPEN gate without asking the actor."""
    data.total_calls += count
    data.rejected_calls += count


# -- the step -----------------------------------------------------------------------------


def step(
    data: BreakerData,
    message: Command,
    now: float,
    epoch: float,
    config: CircuitBreakerConfig,
) -> tuple[Any, list[Action]]:
    """Apply ``message``; return (reply, actions).  See the module docstring for the contract."""
    actions: list[Action] = []
    reply: Any = None
    match message:
        case Admit():
            reply = _admit(data, now, epoch, config, actions)
        case RecordSuccess(generation=generation, probe=probe, duration=duration):
            _count_outcome(data, now, duration, config, success=True)
            data.successful_calls += 1
            data.last_success_at = now
            if generation == data.generation:
                if probe:
                    data.probes_in_flight -= 1
                    data.probe_successes += 1
                    if data.probe_successes >= config.success_threshold:
                        _transition(data, CLOSED, "probes_succeeded", now, epoch, config, actions)
                    elif config.max_half_open_duration is not None:
                        # A completed probe proves the half-open state is not stuck.
                        deadline = now + config.max_half_open_duration
                        actions.append(StartTimer(deadline, data.generation))
                elif data.state is CLOSED:
                    data.consecutive_failures = 0
                    if config.uses_rate_window:
                        _check_rates(data, now, epoch, config, actions)
        case RecordFailure(generation=generation, probe=probe, duration=duration):
            previous_failure_at = data.last_failure_at
            _count_outcome(data, now, duration, config, success=False)
            data.failed_calls += 1
            data.last_failure_at = now
            if generation != data.generation:
                pass  # Late: counted above; it must not re-open, extend a break or emit.
            elif probe:
                data.probes_in_flight -= 1
                _transition(data, OPEN, "probe_failed", now, epoch, config, actions)
            elif data.state is CLOSED:
                if (
                    previous_failure_at is not None
                    and now - previous_failure_at >= config.reset_timeout
                ):
                    data.consecutive_failures = 0
                data.consecutive_failures += 1
                if data.consecutive_failures >= config.failure_threshold and not data.forced:
                    _transition(data, OPEN, "failure_threshold", now, epoch, config, actions)
                else:
                    _check_rates(data, now, epoch, config, actions)
        case RecordIgnored(generation=generation, probe=probe, duration=duration):
            data.total_calls += 1
            data.ignored_calls += 1
            if duration >= 0:  # negative: the call was not timed
                data.histogram().record(duration)
            if probe and generation == data.generation:
                data.probes_in_flight -= 1
        case StateTimerFired(generation=generation):
            # A timer of an earlier generation is stale: the state changed since it was armed.
            if generation == data.generation and not data.forced:
                if data.state is OPEN and data.clustered:
                    _request_lease(data, actions)
                elif data.state is OPEN:
                    _transition(data, HALF_OPEN, "timeout_elapsed", now, epoch, config, actions)
                elif data.state is HALF_OPEN:
                    _transition(data, OPEN, "half_open_timeout", now, epoch, config, actions)
        case Reset():
            data.forced = False
            data.consecutive_failures = 0
            data.window = None
            data.count_window = None
            data.durations = None
            data.break_duration = None
            data._clear_counts()
            if data.state is CLOSED:
                data.generation += 1
            else:
                _transition(data, CLOSED, "reset", now, epoch, config, actions)
        case ForceOpen():
            data.forced = True
            if data.state is OPEN:
                data.generation += 1
                data.open_until = None
                actions.append(CancelTimer())
            else:
                _transition(data, OPEN, "forced_open", now, epoch, config, actions)
        case ForceClose():
            data.forced = True
            if data.state is CLOSED:
                data.generation += 1
            else:
                _transition(data, CLOSED, "forced_close", now, epoch, config, actions)
        case GetSnapshot():
            reply = snapshot(data, now, epoch, config)
        case Reconfigure(config=new):
            _reconfigure(data, config, new, epoch, actions)
        case ProbeLeaseDecided(generation=generation, granted=granted, retry_in=retry_in):
            data.lease_pending = False
            if generation == data.generation and data.state is OPEN and not data.forced:
                if granted:
                    _transition(data, HALF_OPEN, "timeout_elapsed", now, epoch, config, actions)
                else:
                    _set_break(data, now + retry_in, actions)
        case ApplyRemoteState(state=state, forced=forced, remaining=remaining):
            _apply_remote(data, CircuitState(state), forced, remaining, now, epoch, config, actions)
        case ClusterCounts(successes=successes, failures=failures, slow=slow, since=since):
            closed_at = data.state_changed_at
            if (
                data.state is CLOSED
                and closed_at is not None
                and since < math.floor(epoch - (now - closed_at))
            ):
                # The cluster's window still holds calls from before the close (the second of
                # the close itself is let in): the fresh local window judges meanwhile.
                data.cluster_counts = None
            else:
                data.cluster_counts = (successes, failures, slow)
                _check_rates(data, now, epoch, config, actions)
        case UseLocalCounts():
            data.cluster_counts = None
        case _:
            raise TypeError(f"breaker {data.name!r} cannot handle {type(message).__name__}")
    return reply, actions


def _admit(
    data: BreakerData,
    now: float,
    epoch: float,
    config: CircuitBreakerConfig,
    actions: list[Action],
) -> Admission:
    if data.state is CLOSED:
        return Admission(granted=True, generation=data.generation)
    if data.state is OPEN:
        if data.forced or data.open_until is None:
            return _reject(data, math.inf)
        if now < data.open_until:
            return _reject(data, data.open_until - now)
        # The break is over even if the timer has not fired yet: admission checks the
        # deadline itself, so correctness never depends on the timer being punctual.
        if data.clustered:
            _request_lease(data, actions)  # one replica probes for the whole cluster
            return _reject(data, 0.0)
        _transition(data, HALF_OPEN, "timeout_elapsed", now, epoch, config, actions)
    if data.probes_in_flight < config.half_open_max_calls:
        data.probes_in_flight += 1
        return Admission(granted=True, generation=data.generation, probe=True)
    return _reject(data, 0.0)


def _reject(data: BreakerData, retry_after: float) -> Admission:
    data.total_calls += 1
    data.rejected_calls += 1
    return Admission(
        granted=False,
        generation=data.generation,
        retry_after=retry_after,
        state=data.state.value,
    )


def _count_outcome(
    data: BreakerData, now: float, duration: float, config: CircuitBreakerConfig, *, success: bool
) -> None:
    data.total_calls += 1
    if duration >= 0:  # negative: the call was not timed
        data.histogram().record(duration)
    slow = config.slow_call_duration is not None and duration > config.slow_call_duration
    data.rate_window(config).add(now, int(success), int(not success), int(slow))
    if config.sliding_window_size is not None:
        flags = (0 if success else CountWindow.FAILED) | (CountWindow.SLOW if slow else 0)
        data.window_of_calls(config).add(flags)


def _check_rates(
    data: BreakerData,
    now: float,
    epoch: float,
    config: CircuitBreakerConfig,
    actions: list[Action],
) -> None:
    """Open a CLOSED breaker whose failure or slow-call rate reached its threshold.

    Evaluated after every recorded outcome that is not late, successes included (as
    resilience4j does): the window may reach ``minimum_calls`` on a success, and a time
    window that forgot old successes may hold a higher rate than before.  The cost stays off
    the plain path: only configs with a rate policy get here, and the fast path does it once
    per batch."""
    if data.state is not CLOSED or data.forced or not config.uses_rate_window:
        return
    calls, failures, slow = _window_totals(data, now, config)
    if calls < config.minimum_calls:
        return
    threshold = config.failure_rate_threshold
    if threshold is not None and failures / calls >= threshold:
        _transition(data, OPEN, "failure_rate", now, epoch, config, actions)
    elif config.slow_call_duration is not None and slow / calls >= config.slow_call_rate_threshold:
        _transition(data, OPEN, "slow_call_rate", now, epoch, config, actions)


def _window_totals(
    data: BreakerData, now: float, config: CircuitBreakerConfig
) -> tuple[int, int, int]:
    """(calls, failures, slow) in the window the rate policies judge."""
    if data.cluster_counts is not None:
        successes, failures, slow = data.cluster_counts
        return successes + failures, failures, slow
    if config.sliding_window_size is not None:
        return data.window_of_calls(config).totals()
    successes, failures, slow = data.rate_window(config).totals(now)
    return successes + failures, failures, slow


def _request_lease(data: BreakerData, actions: list[Action]) -> None:
    if not data.lease_pending:
        data.lease_pending = True
        actions.append(RequestProbeLease(data.generation))


def _set_break(data: BreakerData, until: float, actions: list[Action]) -> None:
    """Move the end of the current break (a new generation, so callers see the new gate)."""
    data.generation += 1
    data.open_until = until
    actions.append(StartTimer(until, data.generation))


def _apply_remote(
    data: BreakerData,
    state: CircuitState,
    forced: bool,
    remaining: float,
    now: float,
    epoch: float,
    config: CircuitBreakerConfig,
    actions: list[Action],
) -> None:
    """Follow another replica.  A remote HALF_OPEN means another replica holds the probe
    lease: keep rejecting here for ``remaining`` seconds, until its verdict arrives."""
    data.forced = forced
    if state is CLOSED:
        if data.state is not CLOSED:
            _transition(data, CLOSED, "cluster", now, epoch, config, actions)
        else:
            data.generation += 1
        return
    if forced and state is OPEN:
        if data.state is not OPEN:
            _transition(data, OPEN, "cluster", now, epoch, config, actions)
        else:
            data.generation += 1
            data.open_until = None
            actions.append(CancelTimer())
        return
    if data.state is not OPEN:
        _transition(data, OPEN, "cluster", now, epoch, config, actions)
    data.lease_pending = False
    _set_break(data, now + remaining, actions)


def _next_break(data: BreakerData, reason: str, config: CircuitBreakerConfig) -> float:
    """How long this OPEN period lasts: the base, or the backed-off value after a failed
    probe (``probe_failed``/``half_open_timeout``), drawn with jitter when asked."""
    base = config.timeout_duration
    current = data.break_duration if data.break_duration is not None else base
    if reason in ("probe_failed", "half_open_timeout"):
        ceiling = config.max_timeout_duration
        current = current * config.backoff_multiplier
        if ceiling is not None:
            current = min(current, ceiling)
    else:
        current = base
    data.break_duration = current
    if config.backoff_jitter and current > base:
        if data.rng is None:
            data.rng = random.Random()
        return data.rng.uniform(base, current)
    return current


def _reconfigure(
    data: BreakerData,
    old: CircuitBreakerConfig,
    new: CircuitBreakerConfig,
    epoch: float,
    actions: list[Action],
) -> None:
    """Switch to ``new``: counts stay; windows whose shape changed start afresh; a running
    break keeps its deadline (it was promised to callers as ``retry_after``)."""
    if not isinstance(new, CircuitBreakerConfig):
        raise TypeError(f"config: expected CircuitBreakerConfig, got {type(new).__name__}")
    changed = tuple(
        field for field in new.__struct_fields__ if getattr(new, field) != getattr(old, field)
    )
    if not changed:
        return
    if new.monitoring_window != old.monitoring_window:
        data.window = None
    if new.sliding_window_size != old.sliding_window_size or (
        new.slow_call_duration != old.slow_call_duration
    ):
        data.count_window = None
    if new.timeout_duration != old.timeout_duration:
        data.break_duration = None
    actions.append(ApplyConfig(new))
    actions.append(Publish(ConfigChanged(breaker=data.name, at=epoch, fields=changed)))


def _transition(
    data: BreakerData,
    to_state: CircuitState,
    reason: str,
    now: float,
    epoch: float,
    config: CircuitBreakerConfig,
    actions: list[Action],
) -> None:
    from_state = data.state
    data.state = to_state
    data.generation += 1
    data.state_transitions += 1
    data.state_changed_at = now
    data.probes_in_flight = 0
    data.probe_successes = 0
    if from_state is not CLOSED:
        actions.append(CancelTimer())
    data.open_until = None
    if to_state is OPEN and not data.forced:
        data.open_until = now + _next_break(data, reason, config)
        actions.append(StartTimer(data.open_until, data.generation))
    elif to_state is HALF_OPEN and config.max_half_open_duration is not None:
        actions.append(StartTimer(now + config.max_half_open_duration, data.generation))
    elif to_state is CLOSED:
        data.consecutive_failures = 0
        data.break_duration = None
        if not data.forced:
            # A closed breaker starts with fresh metrics (as in resilience4j): the outage's
            # failures must not count against the recovered upstream.  Outcomes of calls
            # admitted before the close still arrive late; they land in the new windows but,
            # being late, never trip the breaker themselves.  A forced close keeps them: it
            # holds CLOSED whatever the rates say, and observers still see how it fares.
            data.window = None
            data.count_window = None
            data.cluster_counts = None
    actions.append(
        Publish(
            StateChanged(
                breaker=data.name,
                at=epoch,
                from_state=from_state,
                to_state=to_state,
                reason=reason,
                generation=data.generation,
                consecutive_failures=data.consecutive_failures,
                failed_calls=data.failed_calls,
                total_calls=data.total_calls,
                forced=data.forced,
            )
        )
    )


def effective_consecutive_failures(
    data: BreakerData, now: float, config: CircuitBreakerConfig
) -> int:
    """The consecutive count as the next failure would see it (it restarts after
    ``reset_timeout`` seconds without a failure)."""
    if (
        data.state is CLOSED
        and data.last_failure_at is not None
        and now - data.last_failure_at >= config.reset_timeout
    ):
        return 0
    return data.consecutive_failures


def failure_rate(data: BreakerData, now: float) -> float:
    return data.window.failure_rate(now) if data.window is not None else 0.0


def snapshot(
    data: BreakerData, now: float, epoch: float, config: CircuitBreakerConfig
) -> CircuitBreakerMetrics:
    def wall(moment: float | None) -> float | None:
        return None if moment is None else epoch - (now - moment)

    retry_after: float | None = None
    if data.state is OPEN:
        retry_after = math.inf if data.open_until is None else max(0.0, data.open_until - now)
    durations = data.durations
    return CircuitBreakerMetrics(
        name=data.name,
        state=data.state,
        forced=data.forced,
        total_calls=data.total_calls,
        successful_calls=data.successful_calls,
        failed_calls=data.failed_calls,
        ignored_calls=data.ignored_calls,
        rejected_calls=data.rejected_calls,
        consecutive_failures=effective_consecutive_failures(data, now, config),
        failure_rate=failure_rate(data, now),
        state_transitions=data.state_transitions,
        last_failure_time=wall(data.last_failure_at),
        last_success_time=wall(data.last_success_at),
        state_changed_at=wall(data.state_changed_at),
        half_open_calls_in_flight=data.probes_in_flight,
        retry_after=retry_after,
        duration_p50=durations.percentile(0.50) if durations else None,
        duration_p95=durations.percentile(0.95) if durations else None,
        duration_p99=durations.percentile(0.99) if durations else None,
    )
