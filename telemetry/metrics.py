"""Breaker metrics, built from bus events and read by observable instruments.

Why not a counter ``add()`` or a histogram ``record()`` per call: the OpenTelemetry SDK costs
microseconds per measurement, more than a breaker call.  So the breakers already aggregate
(``CallsRecorded`` carries one drain's counts and duration buckets) and this module only adds
those aggregates into cumulative tallies, one dictionary update per event.  The SDK sees the
tallies once per collection, through observable instruments whose callbacks are cheap snapshot
reads on the reader's thread.

Threads: :meth:`BreakerMetrics.handle` runs on the telemetry actor's loop thread and is the
only writer.  Callbacks and :meth:`duration_points` run on the metric reader's thread.  They
copy what they read: copying a ``dict`` with string keys, or reading a reference, is atomic
under the GIL, and the duration tallies are replaced as one tuple, so a reader never sees
buckets and sum from different events.

The duration histogram is not an API instrument: the API has no way to hand over pre-bucketed
counts.  :meth:`duration_points` exposes them and ``telemetry.setup`` bridges them into the
reader's output (see ``telemetry/setup.py``).  Library code here talks to the API only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from operator import add
from typing import Final, NamedTuple

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from actors.breaker import Breaker
from actors.config import CircuitState
from actors.events import BreakerRemoved, CallsRecorded, Event, StateChanged
from actors.stats import DURATION_BOUNDS
from actors.system import ActorSystem
from telemetry import names

#: Exported bucket bounds: every fourth actor bound, i.e. 1 us, 2 us, 4 us ... ~67 s.  The actor
#: keeps finer buckets (steps of 19 %) for the monitor's percentiles; 109 buckets per breaker
#: would be heavy for metric backends, and a subset of bounds merges exactly.
EXPORT_BOUNDS: Final[tuple[float, ...]] = DURATION_BOUNDS[::4]

_STATES: Final = tuple(CircuitState)


def coarsen(buckets: Iterable[int]) -> list[int]:
    """Merge counts over ``DURATION_BOUNDS`` into counts over :data:`EXPORT_BOUNDS`.

    Fine bucket ``i`` holds durations in ``(B[i-1], B[i]]``; with ``C[j] = B[4j]`` it falls in
    coarse bucket ``j = ceil(i / 4)``, the last one being the overflow.
    """
    coarse = [0] * (len(EXPORT_BOUNDS) + 1)
    for index, count in enumerate(buckets):
        if count:
            coarse[(index + 3) // 4] += count
    return coarse


class DurationPoint(NamedTuple):
    """One breaker's cumulative call durations since ``start_ns`` (epoch nanoseconds)."""

    name: str
    start_ns: int
    calls: int
    seconds: float
    bucket_counts: list[int]  # over EXPORT_BOUNDS, plus overflow


class _Tally:
    """Cumulative figures for one breaker; written by the actor thread only."""

    __slots__ = (
        "calls",
        "durations",
        "failure_rate",
        "name_attrs",
        "outcome_attrs",
        "start_ns",
        "state",
        "transitions",
    )

    def __init__(self, name: str) -> None:
        self.name_attrs = {names.NAME: name}
        self.outcome_attrs = tuple({names.NAME: name, names.OUTCOME: o} for o in names.OUTCOMES)
        self.calls = [0, 0, 0, 0]  # in the order of names.OUTCOMES
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.durations: tuple[list[int], float] | None = None  # (fine buckets, sum)
        self.state: CircuitState | None = None
        self.failure_rate = 0.0
        self.start_ns = time.time_ns()


class BreakerMetrics:
    """Tallies of one actor system's breakers, exported through ``meter``.

    Creating it registers the observable instruments; :meth:`close` makes their callbacks
    report nothing (the API cannot unregister a callback).
    """

    def __init__(self, meter: Meter, system: ActorSystem) -> None:
        self._system = system
        self._tallies: dict[str, _Tally] = {}
        self.closed = False
        meter.create_observable_counter(
            names.CALLS,
            callbacks=[self._observe_calls],
            unit=names.CALLS_UNIT,
            description=names.CALLS_DESCRIPTION,
        )
        meter.create_observable_counter(
            names.TRANSITIONS,
            callbacks=[self._observe_transitions],
            unit=names.TRANSITIONS_UNIT,
            description=names.TRANSITIONS_DESCRIPTION,
        )
        # An up-down counter rather than a gauge: summed over breakers it reads "how many
        # breakers are open", which is what dashboards graph.
        meter.create_observable_up_down_counter(
            names.STATUS,
            callbacks=[self._observe_status],
            unit=names.STATUS_UNIT,
            description=names.STATUS_DESCRIPTION,
        )
        meter.create_observable_gauge(
            names.FAILURE_RATE,
            callbacks=[self._observe_failure_rate],
            unit=names.FAILURE_RATE_UNIT,
            description=names.FAILURE_RATE_DESCRIPTION,
        )
        meter.create_observable_counter(
            names.DROPPED_EVENTS,
            callbacks=[self._observe_dropped],
            unit=names.DROPPED_EVENTS_UNIT,
            description=names.DROPPED_EVENTS_DESCRIPTION,
        )
        meter.create_observable_up_down_counter(
            names.CLUSTER_LINK,
            callbacks=[self._observe_cluster_link],
            unit=names.CLUSTER_LINK_UNIT,
            description=names.CLUSTER_LINK_DESCRIPTION,
        )

    def __repr__(self) -> str:
        return f"<BreakerMetrics breakers={len(self._tallies)} closed={self.closed}>"

    # -- the writer (telemetry actor thread) ---------------------------------------------------

    def _tally(self, name: str) -> _Tally:
        tally = self._tallies.get(name)
        if tally is None:
            tally = self._tallies[name] = _Tally(name)
        return tally

    def handle(self, event: Event) -> None:
        """Fold one bus event into the tallies."""
        if isinstance(event, CallsRecorded):
            tally = self._tally(event.breaker)
            calls = tally.calls
            calls[0] += event.successes
            calls[1] += event.failures
            calls[2] += event.ignored
            calls[3] += event.rejected
            tally.failure_rate = event.failure_rate
            if event.successes or event.failures or event.ignored:
                previous = tally.durations
                if previous is None:
                    tally.durations = (list(event.duration_buckets), event.duration_sum)
                else:
                    buckets = list(map(add, previous[0], event.duration_buckets))
                    tally.durations = (buckets, previous[1] + event.duration_sum)
        elif isinstance(event, BreakerRemoved):
            # Forgotten: its attribute sets are no longer reported at the next collection.
            self._tallies.pop(event.breaker, None)
        elif isinstance(event, StateChanged):
            tally = self._tally(event.breaker)
            key = (event.from_state.value, event.to_state.value, event.reason)
            tally.transitions[key] = tally.transitions.get(key, 0) + 1
            tally.state = event.to_state
            if event.reason == "reset":
                tally.failure_rate = 0.0  # a reset clears the breaker's rate window

    # -- the readers (metric reader thread) ----------------------------------------------------

    def _snapshot(self) -> list[tuple[str, _Tally]]:
        return [] if self.closed else list(self._tallies.items())

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        for _, tally in self._snapshot():
            calls = tally.calls
            for index, attrs in enumerate(tally.outcome_attrs):
                yield Observation(calls[index], attrs)

    def _observe_transitions(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, tally in self._snapshot():
            for (from_state, to_state, reason), count in list(tally.transitions.items()):
                attrs = {
                    names.NAME: name,
                    names.TRANSITION_FROM: from_state,
                    names.TRANSITION_TO: to_state,
                    names.TRANSITION_REASON: reason,
                }
                yield Observation(count, attrs)

    def _observe_status(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.closed:
            return
        states = {name: tally.state for name, tally in self._snapshot()}
        for name, breaker in self._system.breakers().items():
            states[name] = _published_state(breaker)
        for name, current in states.items():
            current = current or CircuitState.CLOSED  # seen only through calls: never changed
            for state in _STATES:
                attrs = {names.NAME: name, names.STATE: state.value}
                yield Observation(1 if state is current else 0, attrs)

    def _observe_failure_rate(self, options: CallbackOptions) -> Iterable[Observation]:
        for _, tally in self._snapshot():
            yield Observation(tally.failure_rate, tally.name_attrs)

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.closed:
            yield Observation(self._system.bus.dropped)

    def _observe_cluster_link(self, options: CallbackOptions) -> Iterable[Observation]:
        # Nothing without a cluster link: the series exists only in cluster mode.
        status = getattr(self._system.cluster, "status", None)
        if self.closed or status is None:
            return
        for candidate in names.LINK_STATUSES:
            yield Observation(1 if status == candidate else 0, {names.LINK_STATUS: candidate})

    def duration_points(self) -> list[DurationPoint]:
        """Cumulative duration histograms, one per breaker that ran calls (any thread)."""
        points = []
        for name, tally in self._snapshot():
            durations = tally.durations
            if durations is not None:
                buckets, total = durations
                coarse = coarsen(buckets)
                points.append(DurationPoint(name, tally.start_ns, sum(coarse), total, coarse))
        return points


def _published_state(breaker: Breaker) -> CircuitState:
    # The gate is the state the actor publishes for callers to read without asking: a
    # reference read, current for registry breakers even before (or without) any event.
    return breaker._actor.gate.state
