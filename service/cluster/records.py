"""The state record: one breaker's cluster state, as stored and published, and what a replica
makes of one (pure functions: no Redis, no clock)."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from actors.messages import ApplyRemoteState
from actors.snapshot import CircuitBreakerMetrics


class StateRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One breaker's cluster state, as stored in ``{ns}:state:{breaker}`` and published.

    ``generation`` is left out when encoding (it is 0 then): the publish script inserts the one
    it assigns."""

    breaker: str
    state: Literal["closed", "open", "half_open"]
    forced: bool = False
    open_until: float | None = None
    origin: str
    at: float
    generation: int = 0


decode_record = msgspec.json.Decoder(StateRecord).decode
encode = msgspec.json.Encoder().encode


def record_of(snapshot: CircuitBreakerMetrics, now: float, origin: str) -> StateRecord:
    """The record announcing ``snapshot`` (``now``: epoch seconds)."""
    retry_after = snapshot.retry_after
    open_until = None
    if retry_after is not None and math.isfinite(retry_after) and not snapshot.forced:
        open_until = now + retry_after
    return StateRecord(
        breaker=snapshot.name,
        state=snapshot.state.value,
        forced=snapshot.forced,
        open_until=open_until,
        origin=origin,
        at=now,
    )


def remote_state(record: StateRecord, now: float, lease_left: float) -> ApplyRemoteState:
    """What a replica tells its breaker about ``record`` (``now``: epoch seconds;
    ``lease_left``: the probe lease's time left, seconds)."""
    if record.state == "open" and not record.forced:
        remaining = max(0.0, (record.open_until or 0.0) - now)
        return ApplyRemoteState(state="open", remaining=remaining)
    if record.state == "half_open":
        # Another replica holds the probe lease: keep rejecting while it may probe.
        return ApplyRemoteState(state="half_open", remaining=lease_left)
    return ApplyRemoteState(state=record.state, forced=record.forced)
