"""The health aggregator: one actor that knows how healthy every breaker is.

It is fed from two sides and answers by message:

- the event bus: ``StateChanged`` (the state and the forced flag), ``CallsRecorded`` (the
  failure rate as of the breaker's last drain) and ``BreakerRemoved`` (forget it).  These keep
  it current between queries at the cost of a dictionary update per event, on the runtime's
  loop, never in a breaker's way;
- observations told by whoever gathers them: :class:`ObservedStates` carries what
  :func:`observe` read of every breaker in one pass (the monitor's way: one message for
  100,000 breakers); :class:`Observed` carries one fresh
  :class:`~actors.snapshot.CircuitBreakerMetrics`; :class:`Unobservable` says a breaker could
  not be read.

:class:`GetHealth` is answered with a :class:`HealthReport`.  The aggregator itself never asks a
breaker anything, so a slow or broken breaker cannot stall it, and it cannot stall a breaker.

Status rules, per breaker:

- ``failed``: OPEN;
- ``degraded``: HALF_OPEN, or CLOSED with a failure rate at or above ``degraded_threshold``;
- ``healthy``: CLOSED with a failure rate below the threshold;
- ``error``: the last attempt to gather its metrics failed.

The overall status is the worst of all (``healthy`` when there are no breakers), in the order
healthy < degraded < failed < error: ``error`` ranks worst because it means nothing can be said
about that breaker at all.

Ordering: a snapshot and a bus event about the same breaker can reach the mailbox in either
order.  The state is taken from whichever describes the *later* change: an event's ``at`` versus
the snapshot's ``state_changed_at``.  A snapshot of a breaker that never changed state says
nothing newer than any event.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import msgspec

from actors.bus import EventBus, Subscription
from actors.config import CircuitState
from actors.errors import ConfigurationError
from actors.events import BreakerRemoved, CallsRecorded, StateChanged
from actors.machine import BreakerData, failure_rate
from actors.runtime import Actor, Runtime
from actors.snapshot import CircuitBreakerMetrics

DEFAULT_DEGRADED_THRESHOLD = 0.1


class HealthStatus(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"
    ERROR = "error"


#: Worst last; ``overall`` is the maximum by this rank.
_RANK = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.FAILED: 2,
    HealthStatus.ERROR: 3,
}


# -- messages ---------------------------------------------------------------------------------


#: (name, state, forced, failure rate, epoch of the last state change or None).
Observation = tuple[str, CircuitState, bool, float, float | None]


class HealthCommand(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of the aggregator's commands."""


class Observed(HealthCommand, frozen=True):
    """A snapshot of one breaker, just gathered."""

    snapshot: CircuitBreakerMetrics


class Unobservable(HealthCommand, frozen=True):
    """Gathering the metrics of breaker ``name`` failed; ``error`` says how (no secrets)."""

    name: str
    error: str


class ObservedStates(HealthCommand, frozen=True):
    """What the health rules need of many breakers, read in one pass (see :func:`observe`),
    and (name, error) for those that could not be read: one message instead of one per
    breaker, and no full snapshots."""

    states: tuple[Observation, ...]
    errors: tuple[tuple[str, str], ...] = ()


class GetHealth(HealthCommand, frozen=True):
    """Answered with a :class:`HealthReport`."""


# -- answers ----------------------------------------------------------------------------------


class BreakerHealth(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One breaker's health.  ``state`` is None when it is not known (only an error was).
    Scalars only: not tracked by the garbage collector (reports cover 100,000 breakers)."""

    name: str
    status: HealthStatus
    state: CircuitState | None
    failure_rate: float
    forced: bool
    error: str | None = None


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every known breaker's health, by name, and the worst of them."""

    overall: HealthStatus
    breakers: dict[str, BreakerHealth]
    degraded_threshold: float

    def counts(self) -> dict[str, int]:
        """Breakers per status value, every status present (zero when none)."""
        counts = {status.value: 0 for status in HealthStatus}
        for health in self.breakers.values():
            counts[health.status.value] += 1
        return counts


# -- the actor --------------------------------------------------------------------------------


class _Entry(msgspec.Struct, gc=False):
    """What the aggregator knows about one breaker (mutated on the loop thread only).

    Scalars only, so the garbage collector need not track it (100,000 breakers, 100,000
    entries).  ``entered_at``: epoch seconds of the change that gave ``state``."""

    state: CircuitState | None = None
    entered_at: float = -math.inf
    forced: bool = False
    failure_rate: float = 0.0
    error: str | None = None


class HealthAggregator(Actor):
    """Keeps every breaker's health; handlers run on the runtime's loop thread.

    Create it with :meth:`start`, which also subscribes it to the bus.
    """

    __slots__ = ("_entries", "degraded_threshold", "subscription")

    def __init__(
        self, runtime: Runtime, *, degraded_threshold: float = DEFAULT_DEGRADED_THRESHOLD
    ) -> None:
        super().__init__(runtime)
        self.degraded_threshold = check_degraded_threshold(degraded_threshold)
        self._entries: dict[str, _Entry] = {}
        self.subscription: Subscription | None = None

    @classmethod
    def start(
        cls,
        runtime: Runtime,
        bus: EventBus,
        *,
        degraded_threshold: float = DEFAULT_DEGRADED_THRESHOLD,
    ) -> HealthAggregator:
        """A new aggregator on ``runtime``, subscribed to ``bus`` (any thread)."""
        aggregator = cls(runtime, degraded_threshold=degraded_threshold)
        aggregator.subscription = bus.subscribe(
            aggregator, events=(StateChanged, CallsRecorded, BreakerRemoved)
        )
        return aggregator

    def stop(self) -> None:
        """Unsubscribe from the bus; queries still work, on what is known."""
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None

    def __repr__(self) -> str:
        threshold = self.degraded_threshold
        return f"<HealthAggregator breakers={len(self._entries)} threshold={threshold}>"

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        return entry

    def _receive(self, message: Any) -> Any:
        match message:
            case StateChanged(breaker=name, at=at, to_state=state, forced=forced):
                entry = self._entry(name)
                if at >= entry.entered_at:
                    entry.state, entry.entered_at, entry.forced = state, at, forced
                    if state is CircuitState.CLOSED and not forced:
                        entry.failure_rate = 0.0  # an unforced close starts the window afresh
            case CallsRecorded(breaker=name, failure_rate=failure_rate, state=state):
                entry = self._entry(name)
                entry.failure_rate = failure_rate
                if entry.state is None:
                    entry.state = state  # a first sight; any dated change overrides it
            case BreakerRemoved(breaker=name):
                self._entries.pop(name, None)
            case Observed(snapshot=snapshot):
                self._observe(
                    snapshot.name,
                    snapshot.state,
                    snapshot.forced,
                    snapshot.failure_rate,
                    snapshot.state_changed_at,
                )
            case Unobservable(name=name, error=error):
                self._entry(name).error = error
            case ObservedStates(states=states, errors=errors):
                for observation in states:
                    self._observe(*observation)
                for name, error in errors:
                    self._entry(name).error = error
            case GetHealth():
                return self._report()
            case _:
                raise TypeError(f"health aggregator cannot handle {type(message).__name__}")
        return None

    def _observe(
        self,
        name: str,
        state: CircuitState,
        forced: bool,
        failure_rate: float,
        changed_at: float | None,
    ) -> None:
        entry = self._entry(name)
        entry.error = None
        entry.failure_rate = failure_rate
        if entry.state is None or (changed_at is not None and changed_at >= entry.entered_at):
            entry.state = state
            entry.entered_at = changed_at if changed_at is not None else -math.inf
            entry.forced = forced
        elif entry.state is state:
            # Same state: the observation is the fresher word on the forced flag, which can
            # change without a state change (force_open while OPEN, reset while CLOSED).
            entry.forced = forced

    def _report(self) -> HealthReport:
        breakers = {
            name: self._health(name, entry) for name, entry in sorted(self._entries.items())
        }
        overall = max(
            (health.status for health in breakers.values()),
            key=_RANK.__getitem__,
            default=HealthStatus.HEALTHY,
        )
        return HealthReport(
            overall=overall, breakers=breakers, degraded_threshold=self.degraded_threshold
        )

    def _health(self, name: str, entry: _Entry) -> BreakerHealth:
        return BreakerHealth(
            name=name,
            status=classify(entry.state, entry.failure_rate, self.degraded_threshold, entry.error),
            state=entry.state,
            failure_rate=entry.failure_rate,
            forced=entry.forced,
            error=entry.error,
        )


def observe(name: str, data: BreakerData | None, now: float, epoch: float) -> Observation:
    """What the health rules need of one breaker, read from its data on the runtime's thread
    (an ``ActorSystem.read_all`` reader); a dormant breaker (no data) is CLOSED and idle."""
    if data is None:
        return (name, CircuitState.CLOSED, False, 0.0, None)
    changed = data.state_changed_at
    return (
        name,
        data.state,
        data.forced,
        failure_rate(data, now),
        None if changed is None else epoch - (now - changed),
    )


def classify(
    state: CircuitState | None, failure_rate: float, degraded_threshold: float, error: str | None
) -> HealthStatus:
    """The status rules of the module docstring, as one pure function."""
    if error is not None:
        return HealthStatus.ERROR
    if state is CircuitState.OPEN:
        return HealthStatus.FAILED
    if state is CircuitState.HALF_OPEN or failure_rate >= degraded_threshold:
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


def check_degraded_threshold(value: Any) -> float:
    """``value`` if it is a number in (0, 1]; raises ConfigurationError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigurationError(f"degraded_threshold: expected a number in (0, 1], got {value!r}")
    return float(value)
