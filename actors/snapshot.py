"""The immutable picture of one breaker that the actor hands out on request."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from actors.config import CircuitState


class CircuitBreakerMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """A consistent snapshot of one breaker, taken by its actor between two messages.

    Times are epoch seconds (None until the first such event).  ``failure_rate`` is
    failed / (failed + successful) over the last ``monitoring_window`` seconds, 0.0 when there
    were no such calls.  ``total_calls == successful_calls + failed_calls + ignored_calls +
    rejected_calls`` always holds: a call is counted once, when its outcome is known.
    Durations are seconds, estimated from the actor's histogram (None before any call ran).
    ``retry_after`` is the rest of the break while OPEN (``inf`` while forced open), else None.
    """

    name: str
    state: CircuitState
    forced: bool
    total_calls: int
    successful_calls: int
    failed_calls: int
    ignored_calls: int
    rejected_calls: int
    consecutive_failures: int
    failure_rate: float
    state_transitions: int
    last_failure_time: float | None
    last_success_time: float | None
    state_changed_at: float | None
    half_open_calls_in_flight: int
    retry_after: float | None
    duration_p50: float | None
    duration_p95: float | None
    duration_p99: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the state as its string value, and ``retry_after`` as None
        while forced open (JSON has no infinity; ``forced`` says why)."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        if data["retry_after"] == math.inf:
            data["retry_after"] = None
        return data
