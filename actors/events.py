"""What breakers tell the world, through the event bus (``actors.bus``).

Events are frozen, keyword-only, tagged msgspec Structs, named in the past tense.  Times are
epoch seconds.  ``StateChanged`` is published exactly once per real change and is never
dropped; ``CallsRecorded`` aggregates the outcomes of one mailbox drain and may be dropped by a
slow subscriber (the bus counts the drops).
"""

from __future__ import annotations

import msgspec

from actors.config import CircuitState


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every bus event."""

    breaker: str
    at: float


class StateChanged(Event, frozen=True):
    """A breaker moved from one state to another.

    ``reason`` is one of ``failure_threshold``, ``failure_rate``, ``slow_call_rate``,
    ``timeout_elapsed``, ``probe_failed``, ``half_open_timeout``, ``probes_succeeded``,
    ``forced_open``, ``forced_close``, ``reset``, and ``cluster`` (another replica's transition,
    applied here in cluster mode).
    """

    from_state: CircuitState
    to_state: CircuitState
    reason: str
    generation: int
    consecutive_failures: int
    failed_calls: int
    total_calls: int
    forced: bool


class CallsRecorded(Event, frozen=True):
    """Outcomes a breaker recorded in one mailbox drain.

    ``duration_buckets`` counts this drain's call durations per bucket of
    :data:`actors.stats.DURATION_BOUNDS` (one more bucket than bounds, for the overflow);
    rejected calls did not run and have no duration.
    """

    state: CircuitState
    successes: int
    failures: int
    ignored: int
    rejected: int
    duration_sum: float
    duration_buckets: tuple[int, ...]
    failure_rate: float


class ConfigChanged(Event, frozen=True):
    """A breaker's configuration was replaced while it ran."""

    fields: tuple[str, ...]


class BreakerRemoved(Event, frozen=True):
    """A breaker was removed from its system (``ActorSystem.remove_breaker``, or evicted as
    idle when ``evicted`` is True); its outcomes are all counted.  Whoever keeps something
    per breaker (health, telemetry) forgets it."""

    evicted: bool = False


BreakerEvent = StateChanged | CallsRecorded | ConfigChanged | BreakerRemoved
