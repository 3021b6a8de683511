"""The state record: one breaker's cluster state, as stored and published; how a received one
is checked; and what a replica makes of one (pure functions: no Redis, no clock).

Everything a replica receives (on the channel or from a key) is input from outside: it is
checked before it is believed, field by field with its range, and dropped otherwise.  A
record can never stop later changes from propagating: generations are bounded
(:data:`MAX_GENERATION`), and a record may move what a replica knows at most
:data:`MAX_GENERATION_STEP` ahead, so that no single value can pin a breaker's generation
where nothing newer fits.
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal

import msgspec

from actors.config import CircuitBreakerConfig
from actors.messages import ApplyRemoteState
from actors.snapshot import CircuitBreakerMetrics
from service.jsonlimits import json_depth_exceeds

#: Generations are integers in [1, 2**53 - 1]: exact in a Lua number and a JSON double alike.
#: One transition takes one; at a million a second a breaker needs 285 years to use them up.
MAX_GENERATION: Final = 2**53 - 1
#: How far one record may move a replica's newest known generation: far beyond any real gap
#: (one breaker's transitions while a replica was away), far below MAX_GENERATION.
MAX_GENERATION_STEP: Final = 2**32
#: A record is about 200 bytes plus the breaker's name and the replica id.
MAX_RECORD_BYTES: Final = 4096
#: A record is one flat object; one more level leaves room for a future field.
MAX_RECORD_DEPTH: Final = 2

_Epoch = Annotated[float, msgspec.Meta(gt=0.0, lt=1e11)]  # seconds, up to the year 5138
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class StateRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One breaker's cluster state, as stored in ``{ns}:state:{breaker}`` and published.

    ``generation`` is left out when encoding (it is 0 then): the publish script inserts the one
    it assigns.  The constraints apply when decoding (see :func:`decode_record`)."""

    breaker: _Name
    state: Literal["closed", "open", "half_open"]
    forced: bool = False
    open_until: _Epoch | None = None
    origin: _Name
    at: _Epoch
    generation: Annotated[int, msgspec.Meta(ge=0, le=MAX_GENERATION)] = 0


class InvalidRecord(ValueError):
    """A received record that is not one this link could have written (the message says why)."""


_decoder = msgspec.json.Decoder(StateRecord)
encode = msgspec.json.Encoder().encode


def decode_record(raw: object) -> StateRecord:
    """The record in ``raw`` (a message or a stored value); raises :class:`InvalidRecord`.

    Size and nesting are checked before decoding, so a hostile value costs a bounded
    amount of work and can never reach the decoder's recursion limit."""
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, bytes):
        raise InvalidRecord(f"expected a JSON text, got {type(raw).__name__}")
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecord(f"{len(raw)} bytes, more than {MAX_RECORD_BYTES}")
    if json_depth_exceeds(raw, MAX_RECORD_DEPTH):
        raise InvalidRecord(f"nested deeper than {MAX_RECORD_DEPTH} levels")
    try:
        record = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRecord(str(exc)) from None
    if record.generation < 1:
        raise InvalidRecord("Expected `int` >= 1 - at `$.generation`")
    return record


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


def longest_break(config: CircuitBreakerConfig) -> float:
    """The longest break ``config`` can make (backoff included)."""
    return max(config.timeout_duration, config.max_timeout_duration or 0.0)


def remote_state(
    record: StateRecord, now: float, lease_left: float, config: CircuitBreakerConfig
) -> ApplyRemoteState:
    """What a replica tells its breaker (configured by ``config``) about ``record``.

    ``now``: epoch seconds; ``lease_left``: the probe lease's time left, seconds.  A remote
    break is followed for at most the longest break the local config can make: a record
    cannot hold a breaker open longer than its own policy would."""
    if record.state == "open" and not record.forced:
        remaining = min(max(0.0, (record.open_until or 0.0) - now), longest_break(config))
        return ApplyRemoteState(state="open", remaining=remaining)
    if record.state == "half_open":
        # Another replica holds the probe lease: keep rejecting while it may probe.
        return ApplyRemoteState(state="half_open", remaining=lease_left)
    return ApplyRemoteState(state=record.state, forced=record.forced)
