"""A hypothesis state machine: random calls, outcomes, time steps, cancellations and management
against a real breaker and a small reference model of the rules (issue 2's, and issue 7's
policies: failure-rate and slow-call windows, time- and count-based, break backoff, the
half-open time limit, the result predicate and the exception predicate), checked after every
step.

``call_timeout`` is modelled for sync calls, which take whole seconds of the manual clock and
fail with ``CallTimeoutError`` when they return late; an async call's deadline runs on the event
loop's clock, not the manual one, so ``test_policies.py`` covers that side.
``backoff_jitter`` is random by design: the model and the breaker draw from two generators
seeded alike (the one test seam here: the breaker's generator is set before its first draw).

Everything runs on one thread: each example owns an event loop that only turns while a rule
runs it (``run_until_complete``); the actor system lives in a host task on that loop; a call is
a task whose guarded function waits until a rule decides how it ends.  The sync facade is used
on that same thread (the loop's own thread, so every ask is answered inline).  Time is a
``ManualClock`` moved in whole seconds, so the model's arithmetic is exact.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Coroutine
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from actors import (
    ActorSystem,
    Breaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    Event,
    ManualClock,
    StateChanged,
)
from actors.errors import CallTimeoutError

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
JITTER_SEED = 20261127


class Boom(Exception):
    """Expected: a failure."""


class Excused(Boom):
    """Expected, but listed in ignore_exceptions: ignored (ignore overrides expected)."""


class Unexpected(Exception):
    """Not expected: ignored, propagated unchanged."""


RAISES = {"failure": Boom, "excused": Excused, "unexpected": Unexpected}
# Successes and failures move the breaker; the two ignored kinds only need to show up.
# "bad" returns a value that `failure_predicate` (when configured) judges a failure.
OUTCOME = st.sampled_from(
    ("success", "success", "failure", "failure", "excused", "unexpected", "bad")
)
# What the caller sees, and what the breaker must count, for each way a guarded call ends.
SEEN = {
    "success": "returned",
    "failure": "Boom",
    "excused": "Excused",
    "unexpected": "Unexpected",
    "bad": "returned",
}
COUNTED = {
    "success": "success",
    "failure": "failure",
    "excused": "ignored",
    "unexpected": "ignored",
}


def is_bad(result: object) -> bool:
    return result == "bad"


def boom_but_not_excused(exc: BaseException) -> bool:
    return isinstance(exc, Boom) and not isinstance(exc, Excused)


# -- the reference model -------------------------------------------------------------------


class Model:
    """Issue 2's rules, written independently of ``actors.machine``.

    ``epoch`` changes whenever what callers see changes (a state change, a force, a reset); a
    call remembers the epoch it was admitted in, and an outcome from an older epoch is late:
    counted, nothing else.
    """

    def __init__(self, config: CircuitBreakerConfig, now: float) -> None:
        self.config = config
        # With a result predicate the caller judges each result, so successes travel with
        # their epoch; otherwise a CLOSED success takes the epoch-less hot path.
        self.plain = config.failure_predicate is None and config.call_timeout is None
        self.break_duration: float | None = None  # the backed-off break, None = the base
        self.rng = random.Random(JITTER_SEED)
        self.half_open_until: float | None = None
        self.calls: deque[tuple[bool, bool]] = deque(maxlen=config.sliding_window_size or 1)
        self.now = now
        self.state = CLOSED
        self.forced = False
        self.epoch = 0
        self.open_until: float | None = None
        self.consecutive = 0
        self.last_failure: float | None = None
        self.last_success: float | None = None
        self.changed_at: float | None = None
        self.probes = 0
        self.probe_successes = 0
        self.counts = dict.fromkeys(("total", "success", "failure", "ignored", "rejected"), 0)
        self.rated: list[tuple[float, bool, bool]] = []  # (when, failed, slow) for the rates
        self.transitions: list[tuple[CircuitState, CircuitState, str]] = []

    def move(self, to: CircuitState, reason: str) -> None:
        self.transitions.append((self.state, to, reason))
        self.state = to
        self.epoch += 1
        self.changed_at = self.now
        self.probes = self.probe_successes = 0
        opening = to is OPEN and not self.forced
        self.open_until = self.now + self.next_break(reason) if opening else None
        limit = self.config.max_half_open_duration
        self.half_open_until = self.now + limit if to is HALF_OPEN and limit else None
        if to is CLOSED:
            self.consecutive = 0
            self.break_duration = None
            if not self.forced:  # an unforced close starts with fresh windows
                self.rated = []
                self.calls.clear()

    def next_break(self, reason: str) -> float:
        base = self.config.timeout_duration
        current = base if self.break_duration is None else self.break_duration
        if reason in ("probe_failed", "half_open_timeout"):
            current *= self.config.backoff_multiplier
            if self.config.max_timeout_duration is not None:
                current = min(current, self.config.max_timeout_duration)
        else:
            current = base
        self.break_duration = current
        if self.config.backoff_jitter and current > base:
            return self.rng.uniform(base, current)
        return current

    def advance(self, seconds: int) -> None:
        self.now += seconds
        # The state timer: OPEN -> HALF_OPEN once the break is over, HALF_OPEN -> OPEN when no
        # probe completed in max_half_open_duration; no traffic needed.  One change per step:
        # the next timer is armed by the change, from the time the actor applies it.
        if self.state is OPEN and self.open_until is not None and self.now >= self.open_until:
            self.move(HALF_OPEN, "timeout_elapsed")
        elif (
            self.state is HALF_OPEN
            and self.half_open_until is not None
            and self.now >= self.half_open_until
        ):
            self.move(OPEN, "half_open_timeout")

    def check_rates(self) -> None:
        """The failure-rate and slow-call policies, for a CLOSED, unforced breaker."""
        config = self.config
        if self.state is not CLOSED or self.forced:
            return
        if config.failure_rate_threshold is None and config.slow_call_duration is None:
            return
        if config.sliding_window_size is not None:
            window = list(self.calls)
        else:
            window = [(f, s) for when, f, s in self.rated if self.now - when < self.window()]
        if len(window) < config.minimum_calls:
            return
        failures = sum(failed for failed, _ in window)
        slow = sum(slow for _, slow in window)
        threshold = config.failure_rate_threshold
        if threshold is not None and failures / len(window) >= threshold:
            self.move(OPEN, "failure_rate")
        elif (
            config.slow_call_duration is not None
            and slow / len(window) >= config.slow_call_rate_threshold
        ):
            self.move(OPEN, "slow_call_rate")

    def rate(self, failed: bool, duration: float) -> bool:
        """Put a success or failure in the windows; return whether it was slow."""
        slow = (
            self.config.slow_call_duration is not None and duration > self.config.slow_call_duration
        )
        self.rated.append((self.now, failed, slow))
        self.calls.append((failed, slow))
        return slow

    def admit(self) -> tuple[bool, bool, float]:
        """(admitted, probe, retry_after if rejected)."""
        if self.state is CLOSED:
            return True, False, 0.0
        if self.state is OPEN:
            retry_after = math.inf if self.open_until is None else self.open_until - self.now
            self.counts["total"] += 1
            self.counts["rejected"] += 1
            return False, False, retry_after
        if self.probes < self.config.half_open_max_calls:
            self.probes += 1
            return True, True, 0.0
        self.counts["total"] += 1
        self.counts["rejected"] += 1
        return False, False, 0.0

    def outcome(self, kind: str, epoch: int, probe: bool, duration: float = 0.0) -> None:
        self.counts["total"] += 1
        current = epoch == self.epoch
        if kind == "success":
            self.counts["success"] += 1
            self.last_success = self.now
            self.rate(False, duration)
            if probe and current:
                self.probes -= 1
                self.probe_successes += 1
                if self.probe_successes >= self.config.success_threshold:
                    self.move(CLOSED, "probes_succeeded")
                elif self.config.max_half_open_duration:
                    # A completed probe restarts the half-open time limit.
                    self.half_open_until = self.now + self.config.max_half_open_duration
            elif not probe and self.state is CLOSED and (self.plain or current):
                # A success admitted by the plain CLOSED gate carries no epoch: whenever it
                # lands in CLOSED it restarts the consecutive count.
                self.consecutive = 0
                self.check_rates()  # after every outcome, successes included
        elif kind == "failure":
            self.counts["failure"] += 1
            previous, self.last_failure = self.last_failure, self.now
            self.rate(True, duration)
            if not current:
                return
            if probe:
                self.move(OPEN, "probe_failed")
            elif self.state is CLOSED:
                if previous is not None and self.now - previous >= self.config.reset_timeout:
                    self.consecutive = 0
                self.consecutive += 1
                if self.consecutive >= self.config.failure_threshold and not self.forced:
                    self.move(OPEN, "failure_threshold")
                else:
                    self.check_rates()
        else:  # ignored: an exception that does not count, or a cancellation
            self.counts["ignored"] += 1
            if probe and current:
                self.probes -= 1

    def reset(self) -> None:
        self.forced = False
        self.consecutive = 0
        self.counts = dict.fromkeys(self.counts, 0)
        self.rated = []
        self.calls.clear()
        self.break_duration = None
        if self.state is CLOSED:
            self.epoch += 1
        else:
            self.move(CLOSED, "reset")

    def force_open(self) -> None:
        self.forced = True
        if self.state is OPEN:
            self.epoch += 1
            self.open_until = None
        else:
            self.move(OPEN, "forced_open")

    def force_close(self) -> None:
        self.forced = True
        if self.state is CLOSED:
            self.epoch += 1
        else:
            self.move(CLOSED, "forced_close")

    def consecutive_failures(self) -> int:
        stale = (
            self.state is CLOSED
            and self.last_failure is not None
            and self.now - self.last_failure >= self.config.reset_timeout
        )
        return 0 if stale else self.consecutive

    def failure_rate(self) -> float:
        # Whole seconds: the window holds what happened less than monitoring_window ago.
        recent = [failed for when, failed, _ in self.rated if self.now - when < self.window()]
        return sum(recent) / len(recent) if recent else 0.0

    def window(self) -> int:
        return math.ceil(self.config.monitoring_window)

    def retry_after(self) -> float | None:
        if self.state is not OPEN:
            return None
        return math.inf if self.open_until is None else max(0.0, self.open_until - self.now)


# -- calls in flight -----------------------------------------------------------------------


class Call:
    """A call admitted into the guarded function, waiting for a rule to end it."""

    def __init__(self, number: int, epoch: int, probe: bool, started: float) -> None:
        self.started = started
        self.number = number
        self.epoch = epoch
        self.probe = probe
        self.kind = "success"
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.done = asyncio.Event()
        self.result: str | None = None
        self.retry_after: float | None = None
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Call#{self.number}(epoch={self.epoch}, probe={self.probe})"


# -- the machine ---------------------------------------------------------------------------


class BreakerMachine(RuleBasedStateMachine):
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(start=1_000.0)
        self.system = ActorSystem(clock=self.clock, name="model")
        self.stop = asyncio.Event()
        self.events: list[StateChanged] = []
        self.started = asyncio.Event()
        self.host = self.loop.create_task(self._host())
        self.run(self.started.wait())
        self.in_flight: list[Call] = []
        self.numbers = 0
        self.breaker: Breaker | None = None
        self.model: Model | None = None

    async def _host(self) -> None:
        async with self.system:
            self.system.bus.subscribe(self._record, events=(StateChanged,))
            self.started.set()
            await self.stop.wait()

    async def _record(self, event: Event) -> None:
        assert isinstance(event, StateChanged)
        self.events.append(event)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 10))

    @property
    def b(self) -> Breaker:
        assert self.breaker is not None
        return self.breaker

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    @initialize(
        failure_threshold=st.integers(1, 4),
        success_threshold=st.integers(1, 3),
        half_open_max_calls=st.integers(1, 3),
        timeout_duration=st.integers(5, 20),
        reset_timeout=st.integers(10, 60),
        monitoring_window=st.integers(5, 30),
        failure_rate_threshold=st.none() | st.sampled_from([0.25, 0.5, 1.0]),
        sliding_window_size=st.none() | st.integers(1, 6),
        minimum_calls=st.integers(1, 5),
        slow_call_duration=st.none() | st.sampled_from([1, 3, 10]),
        slow_call_rate_threshold=st.sampled_from([0.5, 1.0]),
        backoff_multiplier=st.sampled_from([1, 2, 3]),
        max_timeout_duration=st.none() | st.integers(20, 60),
        max_half_open_duration=st.none() | st.integers(1, 10),
        call_timeout=st.none() | st.sampled_from([2, 5]),
        backoff_jitter=st.booleans(),
        judge_results=st.booleans(),
        exception_predicate=st.booleans(),
    )
    def make_breaker(self, judge_results: bool, exception_predicate: bool, **options: Any) -> None:
        if exception_predicate:  # the same rule as the tuples below, through the predicate
            options["is_failure"] = boom_but_not_excused
        window = options["sliding_window_size"]
        if window is not None:  # a count window must be able to hold minimum_calls calls
            options["minimum_calls"] = min(options["minimum_calls"], window)
        config = CircuitBreakerConfig(
            **options,
            expected_exceptions=(Boom,),
            ignore_exceptions=(Excused,),
            failure_predicate=is_bad if judge_results else None,
        )
        self.breaker = self.system.create_breaker("model", config)
        self.breaker._actor.data.rng = random.Random(JITTER_SEED)
        self.model = Model(config, self.clock.now())

    def counted(self, kind: str) -> str:
        if kind == "bad":
            return "failure" if self.m.config.failure_predicate is not None else "success"
        return COUNTED[kind]

    # -- calls -----------------------------------------------------------------------------

    async def _start(self, call: Call) -> None:
        async def guarded() -> str:
            call.entered.set()
            await call.release.wait()
            if call.kind in RAISES:
                raise RAISES[call.kind]
            return "bad" if call.kind == "bad" else "ok"

        async def runner() -> None:
            try:
                await self.b.call_async(guarded)
                call.result = "returned"
            except CircuitBreakerOpenError as exc:
                call.result = "rejected"
                call.retry_after = exc.retry_after
            except (Boom, Unexpected) as exc:
                call.result = type(exc).__name__
            except asyncio.CancelledError:
                call.result = "cancelled"
            finally:
                call.done.set()

        call.task = asyncio.create_task(runner())
        entered = asyncio.create_task(call.entered.wait())
        finished = asyncio.create_task(call.done.wait())
        await asyncio.wait({entered, finished}, return_when=asyncio.FIRST_COMPLETED)
        entered.cancel()
        finished.cancel()

    @precondition(lambda self: len(self.in_flight) < 5)
    @rule(target=calls)
    def start_call(self) -> Any:
        admitted, probe, retry_after = self.m.admit()
        self.numbers += 1
        call = Call(self.numbers, self.m.epoch, probe, self.m.now)
        self.run(self._start(call))
        if not admitted:
            assert call.result == "rejected", call
            assert call.retry_after == retry_after
            return multiple()  # nothing in flight to keep
        assert call.entered.is_set() and not call.done.is_set(), call
        self.in_flight.append(call)
        return call

    def _end(self, call: Call) -> None:
        assert call.task is not None
        self.run(call.done.wait())
        self.in_flight.remove(call)

    @rule(call=consumes(calls), kind=OUTCOME)
    def finish_call(self, call: Call, kind: str) -> None:
        assert call in self.in_flight
        call.kind = kind
        call.release.set()
        self._end(call)
        assert call.result == SEEN[kind]
        self.m.outcome(self.counted(kind), call.epoch, call.probe, self.m.now - call.started)

    @rule(call=consumes(calls))
    def cancel_call(self, call: Call) -> None:
        assert call in self.in_flight
        assert call.task is not None
        call.task.cancel()
        self._end(call)
        assert call.result == "cancelled"
        self.m.outcome("ignored", call.epoch, call.probe)  # cancellation is never a failure

    @rule(kind=OUTCOME, seconds=st.sampled_from([0, 0, 1, 3, 6]))
    def sync_call(self, kind: str, seconds: int) -> None:
        """A sync call on the loop's own thread: admission and outcome at once.  With a
        ``call_timeout`` it takes ``seconds`` of the manual clock (instant otherwise: only then
        does the outcome travel behind any timer that fires meanwhile, as the model has it)."""
        if self.m.config.call_timeout is None:
            seconds = 0

        def guarded() -> str:
            self.clock.advance(seconds)
            if kind in RAISES:
                raise RAISES[kind]
            return "bad" if kind == "bad" else "ok"

        admitted, probe, retry_after = self.m.admit()
        epoch = self.m.epoch
        try:
            self.b.call(guarded)
            result = "returned"
        except CircuitBreakerOpenError as exc:
            result = "rejected"
            assert exc.retry_after == retry_after
        except CallTimeoutError:
            result = "CallTimeoutError"
        except (Boom, Unexpected) as exc:
            result = type(exc).__name__
        if not admitted:
            assert result == "rejected"
            return
        self.m.advance(seconds)  # a timer that fired during the call is applied first
        timeout = self.m.config.call_timeout
        if kind not in RAISES and timeout is not None and seconds > timeout:
            # A sync call cannot be interrupted: returning late, it fails with the timeout.
            assert result == "CallTimeoutError"
            self.m.outcome("failure", epoch, probe, seconds)
            return
        assert result == SEEN[kind]
        self.m.outcome(self.counted(kind), epoch, probe, seconds)

    # -- time and management ---------------------------------------------------------------

    @rule(seconds=st.sampled_from([0, 1, 2, 3, 5, 8, 13, 21, 40, 100]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.m.advance(seconds)

    @rule(action=st.sampled_from(["reset", "force_open", "force_close"]), use_async=st.booleans())
    def manage(self, action: str, use_async: bool) -> None:
        """One rule for the three management calls (sync or async twin), so that they do not
        crowd out the calls and time steps that drive the breaker through its states."""
        if use_async:
            self.run(getattr(self.b, f"{action}_async")())
        else:
            getattr(self.b, action)()
        getattr(self.m, action)()

    # -- what must hold after every step ---------------------------------------------------

    @invariant()
    def breaker_matches_model(self) -> None:
        if self.breaker is None:
            return
        model = self.m
        metrics = self.b.metrics  # an inline ask: everything posted so far is applied
        wall = self.clock.wall
        assert metrics.state is model.state
        assert metrics.forced is model.forced
        assert metrics.total_calls == model.counts["total"]
        assert metrics.successful_calls == model.counts["success"]
        assert metrics.failed_calls == model.counts["failure"]
        assert metrics.ignored_calls == model.counts["ignored"]
        assert metrics.rejected_calls == model.counts["rejected"]
        assert metrics.total_calls == (
            metrics.successful_calls
            + metrics.failed_calls
            + metrics.ignored_calls
            + metrics.rejected_calls
        )
        assert metrics.consecutive_failures == model.consecutive_failures()
        assert metrics.failure_rate == model.failure_rate()
        assert metrics.state_transitions == len(model.transitions)
        assert metrics.half_open_calls_in_flight == model.probes
        assert metrics.retry_after == model.retry_after()
        for seen, kept in (
            (metrics.last_failure_time, model.last_failure),
            (metrics.last_success_time, model.last_success),
            (metrics.state_changed_at, model.changed_at),
        ):
            assert seen == (None if kept is None else wall(kept))

    def teardown(self) -> None:
        try:
            for call in list(self.in_flight):
                assert call.task is not None
                call.task.cancel()
                self._end(call)
            self.stop.set()
            self.run(self.host)  # leaving the system drains the bus
            if self.model is not None:
                seen = [(e.from_state, e.to_state, e.reason) for e in self.events]
                assert seen == self.model.transitions  # each change published exactly once
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


BreakerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_against_the_model = BreakerMachine.TestCase
