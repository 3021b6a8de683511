"""What can be said to a breaker actor.

Commands are frozen, keyword-only, tagged msgspec Structs, named in the imperative.  The two
hot-path outcomes are deliberately *not* messages: a success admitted by the CLOSED gate and a
rejection by the OPEN gate are appended to two plain lists beside the mailbox (see
``actors.breaker``), because they happen once per guarded call and building a Struct costs
about 100 ns on this kind of machine.  Everything else (failures, probes, management, queries)
is rare enough to be a Struct.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every breaker command."""


class Admit(Command, frozen=True):
    """Ask for admission when the published gate does not admit freely (HALF_OPEN, or OPEN
    with its break over).  Answered with an :class:`Admission`."""


class RecordSuccess(Command, frozen=True):
    """A call admitted under ``generation`` returned (``probe``: it held a half-open slot)."""

    generation: int
    probe: bool
    duration: float


class RecordFailure(Command, frozen=True):
    """A call admitted under ``generation`` raised an exception that counts as a failure."""

    generation: int
    probe: bool
    duration: float


class RecordIgnored(Command, frozen=True):
    """A call admitted under ``generation`` raised an exception that does not count, or was
    cancelled; it only releases its slot and is counted as ``ignored``."""

    generation: int
    probe: bool
    duration: float


class StateTimerFired(Command, frozen=True):
    """The state timer armed during ``generation`` ran out (the break in OPEN, or
    ``max_half_open_duration`` in HALF_OPEN)."""

    generation: int


class Reconfigure(Command, frozen=True):
    """Replace the breaker's configuration between two messages."""

    config: Any


class Reset(Command, frozen=True):
    """Back to CLOSED, unforced, with counts cleared."""


class ForceOpen(Command, frozen=True):
    """Hold OPEN (no timer) until :class:`Reset` or :class:`ForceClose`."""


class ForceClose(Command, frozen=True):
    """Hold CLOSED (failures are counted but never open) until :class:`Reset` or
    :class:`ForceOpen`."""


class GetSnapshot(Command, frozen=True):
    """Answered with a :class:`~actors.snapshot.CircuitBreakerMetrics`."""


class ApplyRemoteState(Command, frozen=True):
    """Cluster mode: another replica's breaker of the same name moved to ``state``.

    ``remaining`` is how many seconds of break are left (OPEN), or how long to keep rejecting
    while another replica holds the probe lease (HALF_OPEN).  The cluster link has already
    decided that this news is newer than anything this replica knows."""

    state: str
    forced: bool = False
    remaining: float = 0.0


class ProbeLeaseDecided(Command, frozen=True):
    """Cluster mode: the answer to a ``RequestProbeLease`` of ``generation``.  Granted: this
    replica probes.  Refused: another replica does; ask again in ``retry_in`` seconds."""

    generation: int
    granted: bool
    retry_in: float = 1.0


class ClusterCounts(Command, frozen=True):
    """Cluster mode: the whole cluster's calls in the rate window, for the rate policies.

    ``since`` is the epoch second the window starts at.  A breaker that closed after that
    second does not use them: a close starts the windows afresh, and until the cluster's window
    lies after the close the breaker judges by its own fresh one."""

    successes: int
    failures: int
    slow: int = 0
    since: float = 0.0


class UseLocalCounts(Command, frozen=True):
    """Cluster mode: the cluster's counts are no longer known (the link lost its backend);
    the rate policies go back to this replica's own window until the next
    :class:`ClusterCounts`."""


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to :class:`Admit`."""

    granted: bool
    generation: int
    probe: bool = False
    retry_after: float = 0.0
    state: str = "closed"
