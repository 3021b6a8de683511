"""The breaker actor and the handle callers hold.

The actor owns a :class:`~actors.machine.BreakerData` and changes it only by running
``machine.step`` on what its mailbox brings.  After every change that matters to callers it
publishes a :class:`Gate`: an immutable object that callers read without asking, which is what
keeps the common case cheap.

The hot path (``Breaker.call`` / ``Breaker.call_async``), designed rather than hoped for:

- CLOSED: read the gate, run the function, append its duration to the mailbox (one call in 16
  is timed; the others append a constant to a tally list beside it), wake the actor only if it
  is asleep.  No ask, no lock, no allocation beyond the float.
- OPEN with the break still running: read the gate and the clock, count a rejection, raise.
- CLOSED with a call timeout or a result predicate configured: admitted without asking too, but
  through the slower guarded runner that enforces them (the plain path pays nothing for them).
- Anything else (HALF_OPEN, a break that is over, a closed system, a removed breaker) asks the
  actor to ``Admit``.  A dormant breaker's first call activates it and then takes the path its
  new gate says (see :class:`BreakerActor`).
- A failure is an ask: the caller waits until the actor has applied it, so the call that trips
  the breaker raises only after the gate says OPEN (per-caller consistency).  Ignored exceptions
  and cancellations are posted without waiting: they cannot change the state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from operator import add
from types import CoroutineType
from typing import Any, Final, ParamSpec, TypeVar, cast

import anyio

from actors.bus import EventBus
from actors.cluster import ClusterLink
from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import (
    BreakerError,
    BreakerRemovedError,
    CallTimeoutError,
    CircuitBreakerOpenError,
)
from actors.events import BreakerRemoved, CallsRecorded
from actors.guard import guard
from actors.machine import (
    Action,
    ApplyConfig,
    BreakerData,
    CancelTimer,
    Publish,
    RequestProbeLease,
    StartTimer,
    failure_rate,
    record_fast_rejections,
    record_fast_successes,
    snapshot,
    step,
)
from actors.messages import (
    Admission,
    Admit,
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
)
from actors.runtime import Actor, Envelope, Runtime
from actors.snapshot import CircuitBreakerMetrics
from actors.stats import DURATION_BOUNDS, DurationHistogram

logger = logging.getLogger("actors.breaker")

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN

#: Calls on the plain CLOSED path are timed when ``calls & sample_mask == 0``: one in 16.
#: Two clock reads cost more than the rest of the hot path's bookkeeping, and percentiles do
#: not need every call; counts stay exact.  A slow-call policy sets the mask to 0 (time all).
SAMPLE_MASK: Final = 15
#: The `start` of an untimed call, compared by identity, and the duration it reports.
UNTIMED: Final = -1.0
#: What the hot path appends to the tallies list.
SUCCESS: Final = 1
REJECTION: Final = 0


def _elapsed(now: Callable[[], float], start: float) -> float:
    return UNTIMED if start is UNTIMED else now() - start


#: Callables run (on the caller's thread) for every rejected call, e.g. to add an event to the
#: caller's current span.  Empty unless telemetry is installed; checked with one truth test.
rejection_listeners: list[Callable[[CircuitBreakerOpenError], None]] = []


class Gate:
    """What callers may know without asking: published by the actor, read lock-free.

    ``closed``: admit without asking, on the plain fast path.  ``policies``: admit without
    asking, but the caller enforces a call timeout or judges the result.  ``open_until``: reject
    without asking while the clock is before it (``inf`` while forced open).  None of these:
    ask the actor.
    """

    __slots__ = ("closed", "generation", "open_until", "policies", "sample_mask", "state")

    def __init__(
        self,
        state: CircuitState,
        generation: int,
        closed: bool,
        open_until: float | None,
        *,
        policies: bool = False,
        sample_mask: int = SAMPLE_MASK,
    ) -> None:
        self.state = state
        self.generation = generation
        self.closed = closed
        self.open_until = open_until
        self.policies = policies
        self.sample_mask = sample_mask


#: Where a dormant actor's callers go: the slow path, which activates it.
DORMANT: Final = Gate(CLOSED, 0, False, None)
#: A removed breaker's gate: callers go to the slow path, which raises BreakerRemovedError.
REMOVED: Final = Gate(CLOSED, -1, False, None)

#: CLOSED gates are the same for every breaker at the same generation and policies: shared
#: (a gate is never changed once published), so 100,000 closed breakers do not hold 100,000
#: equal gates.  Only early generations are kept; later ones are built each time.
_closed_gates: dict[tuple[int, bool, int], Gate] = {}
_SHARED_GENERATIONS: Final = 64

_activation_lock = threading.Lock()


def _closed_gate(generation: int, plain: bool, mask: int) -> Gate:
    key = (generation, plain, mask)
    gate = _closed_gates.get(key)
    if gate is None:
        gate = Gate(CLOSED, generation, plain, None, policies=not plain, sample_mask=mask)
        if generation < _SHARED_GENERATIONS:
            gate = _closed_gates.setdefault(key, gate)
    return gate


class BreakerActor(Actor):
    """Owns one breaker's data; every handler runs on the runtime's loop thread.

    A new actor is *dormant*: it holds its name, config and runtime and nothing else (no
    mailbox, no hot-path lists, no :class:`BreakerData`), and its gate is :data:`DORMANT`,
    which sends the first caller to the slow path.  The first message, call or read of
    ``data`` *activates* it (:meth:`_activate`).  A service that makes a breaker per host or
    tenant thus pays a couple of hundred bytes for each one it never calls.
    """

    __slots__ = (
        "_batch_epoch",
        "_batch_now",
        "_calls",
        "_data",
        "_tallies",
        "_track",
        "bus",
        "cluster",
        "config",
        "gate",
        "name",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig,
        runtime: Runtime,
        bus: EventBus,
        track: Callable[[BreakerActor], None] | None = None,
    ) -> None:
        # Not Actor.__init__: the mailbox is made on activation (``_post`` and ``_ask_inline``
        # activate first).  ``track`` is told about the actor when it activates (the system
        # closes active actors' gates at shutdown; a dormant one has nothing to close).
        self._runtime = runtime
        self._scheduled = False
        self._mailbox = cast("list[Any]", None)
        self._track = track
        self.name = name
        self.config = config
        self.bus = bus
        self.cluster: ClusterLink | None = None
        self._data: BreakerData | None = None
        self._calls = 0
        self._batch_now = 0.0
        self._batch_epoch = 0.0
        self.gate = DORMANT

    def _activate(self) -> BreakerData:
        """Make what a dormant actor left out, once (any thread; the lock settles a race)."""
        with _activation_lock:
            data = self._data
            if data is not None:
                return data
            # The hot path's channels, plain lists for the GIL-atomicity reasons given in
            # actors.runtime: a timed success admitted by the CLOSED gate appends its duration
            # (a bare float) to the mailbox; an untimed one appends SUCCESS to `_tallies`, and
            # a rejection by the OPEN gate appends REJECTION there (sum() of the tallies counts
            # the successes, in C).  `_calls` picks which calls are timed (Gate.sample_mask).
            self._tallies: list[int] = []
            self._mailbox = []
            data = BreakerData(self.name)
            data.clustered = self.cluster is not None
            self._data = data
            self._publish_gate()  # last: a gate that admits on the fast path needs the lists
            if self._track is not None:
                self._track(self)
            return data

    @property
    def data(self) -> BreakerData:
        """The breaker's counters and state (activates a dormant actor)."""
        data = self._data
        return data if data is not None else self._activate()

    @property
    def dormant(self) -> bool:
        """True until the first message, call or read of :attr:`data`."""
        return self._data is None

    def _post(self, item: Any) -> None:
        if self._data is None:
            self._activate()
        if self.gate is REMOVED:
            # An ask gets the error; an outcome of a call that was running when the breaker
            # was removed is dropped (its caller still gets its own result).
            reply = getattr(item, "reply", None)
            if reply is not None:
                reply.fail(BreakerRemovedError(self.name))
            return
        super()._post(item)

    def _ask_inline(self, message: Any) -> Any:
        if self._data is None:
            self._activate()
        if self.gate is REMOVED:
            raise BreakerRemovedError(self.name)
        return super()._ask_inline(message)

    def last_activity(self, since: float) -> float | None:
        """The later of ``since`` and this breaker's last outcome or state change (monotonic
        seconds), after what is pending; None if it must not be evicted: not CLOSED, forced,
        or probing.  Runtime's thread only (see ``actors.eviction``)."""
        data = self._data
        if data is None:
            return since
        if self._mailbox or self._tallies:
            self._drain()
        if data.state is not CLOSED or data.forced or data.probes_in_flight:
            return None
        moments = (data.last_success_at, data.last_failure_at, data.state_changed_at)
        return max((since, *(moment for moment in moments if moment is not None)))

    def retire(self, epoch: float, *, evicted: bool = False) -> None:
        """Leave the system (runtime's thread only): apply every pending outcome, stop the
        timer, send callers to :class:`BreakerRemovedError`, and publish ``BreakerRemoved``."""
        if self.gate is REMOVED:
            return
        if self._data is None:
            self._activate()  # so that no later use tries to (its lists are garbage soon)
        elif self._mailbox or self._tallies:
            self._drain()
        self._runtime.cancel_timer(self)
        self.gate = REMOVED
        self.bus.publish(BreakerRemoved(breaker=self.name, at=epoch, evicted=evicted))

    def __repr__(self) -> str:
        data = self._data
        if data is None:
            return f"<BreakerActor {self.name!r} dormant>"
        return f"<BreakerActor {self.name!r} {data.state.name} gen={data.generation}>"

    def _drain(self) -> None:
        # The hot path's outcomes are applied before the envelopes that follow them: the
        # timed successes it put in the mailbox (bare numbers, not envelopes) are picked out
        # of each batch first, then the tallies.  A caller's own success is always posted
        # before its next failure (a failure is an ask), so per-caller order is kept; across
        # callers there is no order to keep.
        self._scheduled = False
        clock = self._runtime.clock
        now = self._batch_now = clock.now()
        self._batch_epoch = clock.wall(now)
        report = self.bus.wants(CallsRecorded)
        if report:
            before = _mark(self.data)
        mailbox = self._mailbox
        try:
            while True:
                batch: list[Any] | None = None
                if mailbox:
                    count = len(mailbox)
                    batch = mailbox[:count]
                    del mailbox[:count]
                    timed = [item for item in batch if item.__class__ is not Envelope]
                    if timed:
                        actions = record_fast_successes(
                            self.data, timed, now, self._batch_epoch, self.config
                        )
                        if actions:
                            self._perform(actions)
                        batch = [item for item in batch if item.__class__ is Envelope]
                self._apply_tallies(now)
                if batch is None:
                    break
                for envelope in batch:
                    self._deliver(envelope)
        except BaseException:
            if report:
                before[4].journal = None  # no report: the histogram stops journaling
            raise
        if report:
            self._report(before, now)
        # Drop the drain's float objects (48 bytes a breaker, at 100,000 breakers).
        self._batch_now = self._batch_epoch = 0.0

    def _apply_tallies(self, now: float) -> None:
        tallies = self._tallies
        if tallies:
            count = len(tallies)
            untimed = sum(tallies[:count])  # SUCCESS is 1, REJECTION is 0
            del tallies[:count]
            if untimed:
                actions = record_fast_successes(
                    self.data, [], now, self._batch_epoch, self.config, untimed=untimed
                )
                if actions:
                    self._perform(actions)
            if count > untimed:
                record_fast_rejections(self.data, count - untimed)

    def _receive(self, message: Command) -> Any:
        reply, actions = step(self.data, message, self._batch_now, self._batch_epoch, self.config)
        if actions:
            self._perform(actions)
        elif self.data.generation != self.gate.generation:
            # Reset or ForceClose in CLOSED change only the generation (no action): callers
            # must still see it, or their failures would all look late and never open.
            self._publish_gate()
        return reply

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Publish(event=event):
                    self.bus.publish(event)
                case StartTimer(deadline=deadline, generation=generation):
                    fire = functools.partial(self.tell, StateTimerFired(generation=generation))
                    self._runtime.start_timer(self, deadline, fire)
                case CancelTimer():
                    self._runtime.cancel_timer(self)
                case ApplyConfig(config=config):
                    self.config = config
                    self._publish_gate()
                case RequestProbeLease(generation=generation):
                    if self.cluster is None:  # the link went away: decide locally
                        self.tell(ProbeLeaseDecided(generation=generation, granted=True))
                    else:
                        self.cluster.request_probe(self.name, generation)
        if self.data.generation != self.gate.generation:
            self._publish_gate()

    def _publish_gate(self) -> None:
        data = self.data
        if self._runtime.closed:
            self.gate = Gate(data.state, data.generation, False, None)
        elif data.state is CLOSED:
            plain = not self.config.needs_caller_policies
            # A slow-call policy needs every duration; otherwise one call in 16 is timed.
            mask = 0 if self.config.slow_call_duration is not None else SAMPLE_MASK
            self.gate = _closed_gate(data.generation, plain, mask)
        elif data.state is OPEN:
            open_until = math.inf if data.forced else data.open_until
            self.gate = Gate(OPEN, data.generation, False, open_until)
        else:
            self.gate = Gate(data.state, data.generation, False, None)

    def _restarted(self) -> None:
        self._publish_gate()

    def _report(self, before: _Mark, now: float) -> None:
        data = self.data
        histogram = before[4]
        journal = histogram.journal or ()
        histogram.journal = None
        successes = data.successful_calls - before[0]
        failures = data.failed_calls - before[1]
        ignored = data.ignored_calls - before[2]
        rejected = data.rejected_calls - before[3]
        if not (successes or failures or ignored or rejected):
            return
        # Built from the durations the drain recorded (its journal: this runs once per drain
        # for every breaker while telemetry listens, and a gateway request is often a drain of
        # its own), rather than by copying and diffing all 109 counts.
        buckets = [0] * _BUCKETS
        for position in range(0, len(journal), 2):
            buckets[journal[position]] += journal[position + 1]
        duration_sum = histogram.total - before[5]
        current = data.durations
        if current is not histogram and current is not None:
            # A reset inside the drain: what came after it is all in a new histogram.
            buckets = list(map(add, buckets, current.counts))
            duration_sum += current.total
        self.bus.publish(
            CallsRecorded(
                breaker=self.name,
                at=self._batch_epoch,
                state=data.state,
                successes=max(successes, 0),
                failures=max(failures, 0),
                ignored=max(ignored, 0),
                rejected=max(rejected, 0),
                duration_sum=max(duration_sum, 0.0),
                duration_buckets=tuple(buckets),
                failure_rate=failure_rate(data, now),
            )
        )

    def read_now(
        self, reader: Callable[[str, BreakerData | None, float, float], T], now: float, epoch: float
    ) -> T:
        """``reader(name, data, now, epoch)`` after what is already pending (runtime's thread
        only, like :meth:`apply_now`).  ``data`` is None while the actor is dormant: reading
        must not activate it.  The reader must only read."""
        data = self._data
        if data is not None and (self._mailbox or self._tallies):
            self._drain()
        return reader(self.name, data, now, epoch)

    def apply_now(self, message: Command, now: float, epoch: float) -> Any:
        """Handle ``message`` right now, after what is already pending, and return the reply.

        For batched operations over many breakers (``ActorSystem.batch``): runs on the
        runtime's thread (the only place that may drain an actor), with one clock reading for
        the whole batch, and without an envelope or an ask.  A dormant actor answers a snapshot
        from a pristine record and skips a reset (it has nothing to reset) without activating.
        A handler that raises restarts the actor, as for a delivered message, and the error
        propagates to the batch.
        """
        data = self._data
        if data is None:
            if message.__class__ is GetSnapshot:
                return snapshot(BreakerData(self.name), now, epoch, self.config)
            if message.__class__ is Reset:
                return None
            self._activate()
        if self._mailbox or self._tallies:
            self._drain()
        self._batch_now, self._batch_epoch = now, epoch
        try:
            return self._receive(message)
        except Exception:
            self._restarted()
            raise
        finally:
            self._batch_now = self._batch_epoch = 0.0

    def join_cluster(self, cluster: ClusterLink | None) -> None:
        """Start (or stop) deferring the end of each break to ``cluster``'s probe lease."""
        self.cluster = cluster
        if self._data is not None:  # else activation copies it
            self._data.clustered = cluster is not None

    def close_gate(self) -> None:
        """The system is shutting down: send every caller to the slow path, which raises."""
        if self._data is not None:  # a dormant gate already sends callers there
            self._publish_gate()


#: What a drain's report starts from: the four call counts, the histogram (journaling for
#: the drain) and its duration total.
_Mark = tuple[int, int, int, int, DurationHistogram, float]
_BUCKETS: Final = len(DURATION_BOUNDS) + 1


def _mark(data: BreakerData) -> _Mark:
    """Where a drain starts, for its report; the histogram journals until the report."""
    histogram = data.histogram()
    histogram.journal = []
    return (
        data.successful_calls,
        data.failed_calls,
        data.ignored_calls,
        data.rejected_calls,
        histogram,
        histogram.total,
    )


class Breaker:
    """The handle callers hold: guarded calls, management, metrics.  Thread-safe.

    Async methods are the source and sync methods mirror them name for name (``call`` /
    ``call_async``, ``reset`` / ``reset_async``, ...).  Sync methods may be called from any
    thread, including the loop thread inside a coroutine, where they never block.
    """

    __slots__ = ("__weakref__", "_actor", "_now", "name")
    _display_name = "Breaker"

    def __init__(self, actor: BreakerActor) -> None:
        self._actor = actor
        self._now = actor._runtime.clock.now
        self.name = actor.name

    @property
    def config(self) -> CircuitBreakerConfig:
        """The configuration in force (see :meth:`reconfigure`)."""
        return self._actor.config

    def __repr__(self) -> str:
        gate = self._actor.gate
        text = f"<{self._display_name} {self.name!r} {gate.state.name}"
        if gate.open_until is not None:
            if math.isinf(gate.open_until):
                text += " forced"
            else:
                text += f" retry_in={max(0.0, gate.open_until - self._now()):.1f}s"
        data = self._actor._data
        return text + f" inflight={data.probes_in_flight if data is not None else 0}>"

    # -- guarded calls -----------------------------------------------------------------------

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` under the breaker.

        Returns its result or raises its exception unchanged; raises
        :class:`CircuitBreakerOpenError` without calling it when the breaker rejects the call.
        Cancellation counts as ignored and always gives a half-open slot back.
        """
        actor = self._actor
        gate = actor.gate
        if gate.closed:
            now = self._now
            calls = actor._calls  # the first call is timed, then one in 16
            actor._calls = calls + 1
            start = UNTIMED if calls & gate.sample_mask else now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await self._settle_async(exc, gate.generation, False, _elapsed(now, start), fn)
                raise
            if start is UNTIMED:
                actor._tallies.append(SUCCESS)
            else:
                actor._mailbox.append(now() - start)
            if not actor._scheduled:
                actor._scheduled = True
                actor._runtime.schedule(actor)
            return result
        open_until = gate.open_until
        if open_until is not None:
            moment = self._now()
            if moment < open_until:
                raise self._rejection(gate, open_until - moment)
        return await self._call_admitted_async(gate, fn, args, kwargs)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under the breaker; the sync mirror of
        :meth:`call_async`, safe from any thread."""
        # Mirrors call_async line for line on purpose: sharing the fast path through a helper
        # would add a call (~80 ns) to every guarded call.
        actor = self._actor
        gate = actor.gate
        if gate.closed:
            now = self._now
            calls = actor._calls  # the first call is timed, then one in 16
            actor._calls = calls + 1
            start = UNTIMED if calls & gate.sample_mask else now()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._settle(exc, gate.generation, False, _elapsed(now, start))
                raise
            if result.__class__ is CoroutineType:
                self._misused(result, gate.generation, False)
            if start is UNTIMED:
                actor._tallies.append(SUCCESS)
            else:
                actor._mailbox.append(now() - start)
            if not actor._scheduled:
                actor._scheduled = True
                actor._runtime.schedule(actor)
            return result
        open_until = gate.open_until
        if open_until is not None:
            moment = self._now()
            if moment < open_until:
                raise self._rejection(gate, open_until - moment)
        return self._call_admitted(gate, fn, args, kwargs)

    def _rejection(self, gate: Gate, retry_after: float) -> CircuitBreakerOpenError:
        """Count a rejection by the OPEN gate and build its error.  The caller raises it, so
        that the exception passes through one frame less (each costs ~1 us in 3.11)."""
        actor = self._actor
        actor._tallies.append(REJECTION)
        if not actor._scheduled:
            actor._scheduled = True
            actor._runtime.schedule(actor)
        error = CircuitBreakerOpenError(self.name, gate.state, retry_after)
        if rejection_listeners:
            _notify_rejection(error)
        return error

    async def _call_admitted_async(
        self, gate: Gate, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any
    ) -> T:
        """The slow path: admission by the gate's policies flag or by asking the actor."""
        if gate is DORMANT:  # once per breaker: activate, then take the path its gate says
            self._actor._activate()
            return await self.call_async(fn, *args, **kwargs)
        generation, probe = await self._admit_async(gate)
        config = self._actor.config
        now = self._now
        start = now()
        try:
            if config.call_timeout is None:
                result = await fn(*args, **kwargs)
            else:
                with anyio.move_on_after(config.call_timeout) as scope:
                    result = await fn(*args, **kwargs)
                if scope.cancelled_caught:
                    raise CallTimeoutError(self.name, config.call_timeout)
        except BaseException as exc:
            await self._settle_async(exc, generation, probe, now() - start, fn)
            raise
        outcome = self._judge(result, generation, probe, now() - start, config)
        if probe or outcome.__class__ is RecordFailure:
            await self._ask_quietly_async(outcome)
        else:
            self._actor.tell(outcome)
        return result

    async def _admit_async(self, gate: Gate) -> tuple[int, bool]:
        """Admission off the plain fast path: ``(generation, probe)``, by the gate's policies
        flag or by asking the actor; raises :class:`CircuitBreakerOpenError` when refused."""
        if gate is DORMANT:  # a guarded block's first entry
            self._actor._activate()
            gate = self._actor.gate
        if gate.closed or gate.policies:
            return gate.generation, False
        admission: Admission = await self._actor.ask_async(Admit(), abandoned=self._give_back)
        self._check_admission(admission)
        return admission.generation, admission.probe

    @contextlib.asynccontextmanager
    async def guarded_async(self) -> AsyncIterator[None]:
        """Run the body of an ``async with`` block as one call under the breaker.

        For work that is not one awaitable, such as a response streamed over many awaits with
        ``yield`` in between.  Entering admits the call as :meth:`call_async` does and raises
        :class:`CircuitBreakerOpenError` before the body runs when the breaker rejects it.
        Leaving records the outcome: a success when the body completes, otherwise its exception
        judged as :meth:`call_async` would (cancellation and ``GeneratorExit``, as when a
        consumer abandons a stream, are ignored).  Exceptions propagate unchanged.

        A cancel scope must not span a ``yield``, so ``call_timeout`` cannot interrupt the body:
        it is judged as for a sync call (a body that overruns it fails with
        ``CallTimeoutError`` once it completes).  ``failure_predicate`` does not apply: the
        body has no result to judge.  Successes take the ordinary ``RecordSuccess`` route, not
        the hot-path channel: a guarded block is not a hot path.
        """
        gate = self._actor.gate
        if gate.closed:
            generation, probe = gate.generation, False
        else:
            open_until = gate.open_until
            if open_until is not None:
                moment = self._now()
                if moment < open_until:
                    raise self._rejection(gate, open_until - moment)
            generation, probe = await self._admit_async(gate)
        timeout = self._actor.config.call_timeout
        now = self._now
        start = now()
        try:
            yield
            if timeout is not None and now() - start > timeout:
                raise CallTimeoutError(self.name, timeout)
        except BaseException as exc:
            await self._settle_async(exc, generation, probe, now() - start, None)
            raise
        success = RecordSuccess(generation=generation, probe=probe, duration=now() - start)
        if probe:
            await self._ask_quietly_async(success)
        else:
            self._actor.tell(success)

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """The sync mirror of :meth:`guarded_async`: the body of a ``with`` block as one call
        under the breaker, safe from any thread."""
        gate = self._actor.gate
        if gate.closed or gate.policies:
            generation, probe = gate.generation, False
        else:
            open_until = gate.open_until
            if open_until is not None:
                moment = self._now()
                if moment < open_until:
                    raise self._rejection(gate, open_until - moment)
            admission: Admission = self._actor.ask(Admit())
            self._check_admission(admission)
            generation, probe = admission.generation, admission.probe
        timeout = self._actor.config.call_timeout
        now = self._now
        start = now()
        try:
            yield
            if timeout is not None and now() - start > timeout:
                raise CallTimeoutError(self.name, timeout)
        except BaseException as exc:
            self._settle(exc, generation, probe, now() - start)
            raise
        success = RecordSuccess(generation=generation, probe=probe, duration=now() - start)
        if probe:
            self._ask_quietly(success)
        else:
            self._actor.tell(success)

    def _call_admitted(self, gate: Gate, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        """The sync mirror of :meth:`_call_admitted_async`.  A sync call cannot be interrupted:
        one that overruns ``call_timeout`` fails with ``CallTimeoutError`` once it returns."""
        if gate is DORMANT:
            self._actor._activate()
            return self.call(fn, *args, **kwargs)
        if gate.policies:
            generation, probe = gate.generation, False
        else:
            admission: Admission = self._actor.ask(Admit())
            self._check_admission(admission)
            generation, probe = admission.generation, admission.probe
        config = self._actor.config
        now = self._now
        start = now()
        try:
            result = fn(*args, **kwargs)
            if config.call_timeout is not None and now() - start > config.call_timeout:
                raise CallTimeoutError(self.name, config.call_timeout)
        except BaseException as exc:
            self._settle(exc, generation, probe, now() - start)
            raise
        if result.__class__ is CoroutineType:
            self._misused(result, generation, probe)
        outcome = self._judge(result, generation, probe, now() - start, config)
        if probe or outcome.__class__ is RecordFailure:
            self._ask_quietly(outcome)
        else:
            self._actor.tell(outcome)
        return result

    def _judge(
        self,
        result: Any,
        generation: int,
        probe: bool,
        duration: float,
        config: CircuitBreakerConfig,
    ) -> Command:
        """The outcome of a call that returned: a success, unless ``failure_predicate`` says
        the value itself is a failure (the caller still gets the value)."""
        if config.failure_predicate is not None and config.failure_predicate(result):
            return RecordFailure(generation=generation, probe=probe, duration=duration)
        return RecordSuccess(generation=generation, probe=probe, duration=duration)

    def _check_admission(self, admission: Admission) -> None:
        if not admission.granted:
            error = CircuitBreakerOpenError(
                self.name, CircuitState(admission.state), admission.retry_after
            )
            if rejection_listeners:
                _notify_rejection(error)
            raise error

    def _give_back(self, admission: Admission) -> None:
        """An admission reached an asker that had been cancelled: release what it holds."""
        if admission.granted:
            self._actor.tell(
                RecordIgnored(generation=admission.generation, probe=admission.probe, duration=0.0)
            )

    # -- outcomes that are not plain successes -----------------------------------------------

    def _outcome(
        self, exc: BaseException, generation: int, probe: bool, duration: float
    ) -> Command:
        if exc.__class__ is CallTimeoutError or (
            isinstance(exc, Exception) and self._actor.config.counts_as_failure(exc)
        ):
            return RecordFailure(generation=generation, probe=probe, duration=duration)
        # Anything else (including cancellation, KeyboardInterrupt and SystemExit) only
        # releases the call's slot: it says nothing about the dependency's health.
        return RecordIgnored(generation=generation, probe=probe, duration=duration)

    async def _settle_async(
        self,
        exc: BaseException,
        generation: int,
        probe: bool,
        duration: float,
        fn: Callable[..., Any] | None,
    ) -> None:
        """Record a raised call; waits only for failures, and never raises itself.

        ``fn`` is the function :meth:`call_async` awaited (None for :meth:`guarded_async`,
        whose body is not a function), used to name a non-awaitable in the misuse error."""
        traceback = exc.__traceback__
        if (
            fn is not None
            and exc.__class__ is TypeError
            and traceback is not None
            and traceback.tb_next is None
        ):
            # Raised by our own `await` (fn returned something not awaitable), not inside fn.
            self._actor.tell(RecordIgnored(generation=generation, probe=probe, duration=0.0))
            raise TypeError(
                f"call_async() needs a function that returns an awaitable; {fn!r} does not "
                "(use call() for plain functions)"
            ) from exc
        outcome = self._outcome(exc, generation, probe, duration)
        if outcome.__class__ is RecordFailure:
            await self._ask_quietly_async(outcome)
        else:
            self._actor.tell(outcome)

    def _settle(self, exc: BaseException, generation: int, probe: bool, duration: float) -> None:
        outcome = self._outcome(exc, generation, probe, duration)
        if outcome.__class__ is RecordFailure:
            self._ask_quietly(outcome)
        else:
            self._actor.tell(outcome)

    def _misused(self, result: Any, generation: int, probe: bool) -> None:
        result.close()
        self._actor.tell(RecordIgnored(generation=generation, probe=probe, duration=0.0))
        raise TypeError(
            f"breaker {self.name!r}: call() got a coroutine; use 'await breaker.call_async(fn)' "
            "for async functions"
        )

    async def _ask_quietly_async(self, message: Command) -> None:
        # The caller's own outcome (its result or exception) must win over any breaker trouble.
        try:
            await self._actor.ask_async(message)
        except BreakerError:
            logger.warning("breaker %r could not record %r", self.name, message, exc_info=True)

    def _ask_quietly(self, message: Command) -> None:
        try:
            self._actor.ask(message)
        except BreakerError:
            logger.warning("breaker %r could not record %r", self.name, message, exc_info=True)

    # -- decorator ---------------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        """Use the breaker as a decorator on a sync or an async function."""
        return guard(self, fn)

    # -- management and state (async source, sync mirror) -------------------------------------

    @property
    def published_state(self) -> CircuitState:
        """The state callers are being admitted by, without asking the actor (so it may not
        yet show a transition whose timer has fired but not been handled)."""
        return self._actor.gate.state

    @property
    def state(self) -> CircuitState:
        """The actor's current state (an ask: it sees timer transitions already posted)."""
        return self.metrics.state

    async def state_async(self) -> CircuitState:
        return (await self.metrics_async()).state

    @property
    def metrics(self) -> CircuitBreakerMetrics:
        """A consistent snapshot, including every outcome posted before this call."""
        snapshot: CircuitBreakerMetrics = self._actor.ask(GetSnapshot())
        return snapshot

    async def metrics_async(self) -> CircuitBreakerMetrics:
        snapshot: CircuitBreakerMetrics = await self._actor.ask_async(GetSnapshot())
        return snapshot

    def get_metrics(self) -> dict[str, Any]:
        """:attr:`metrics` as a JSON-ready dict."""
        return self.metrics.to_dict()

    async def get_metrics_async(self) -> dict[str, Any]:
        return (await self.metrics_async()).to_dict()

    def reset(self) -> None:
        """Back to CLOSED, unforced, counts cleared."""
        self._actor.ask(Reset())

    async def reset_async(self) -> None:
        await self._actor.ask_async(Reset())

    def force_open(self) -> None:
        """Hold OPEN until :meth:`reset` or :meth:`force_close`."""
        self._actor.ask(ForceOpen())

    async def force_open_async(self) -> None:
        await self._actor.ask_async(ForceOpen())

    def force_close(self) -> None:
        """Hold CLOSED (failures counted, never opening) until :meth:`reset` or
        :meth:`force_open`."""
        self._actor.ask(ForceClose())

    async def force_close_async(self) -> None:
        await self._actor.ask_async(ForceClose())

    def reconfigure(self, config: CircuitBreakerConfig) -> None:
        """Replace the configuration; the actor applies it between two messages, keeps the
        counts that still make sense, and publishes ``ConfigChanged``."""
        self._actor.ask(Reconfigure(config=_checked_config(config)))

    async def reconfigure_async(self, config: CircuitBreakerConfig) -> None:
        await self._actor.ask_async(Reconfigure(config=_checked_config(config)))

    @property
    def bus(self) -> EventBus:
        """The event bus this breaker publishes on."""
        return self._actor.bus


def _checked_config(config: Any) -> CircuitBreakerConfig:
    if not isinstance(config, CircuitBreakerConfig):
        raise TypeError(f"config: expected CircuitBreakerConfig, got {type(config).__name__}")
    return config


def _notify_rejection(error: CircuitBreakerOpenError) -> None:
    for listener in rejection_listeners:
        try:
            listener(error)
        except Exception:
            logger.exception("rejection listener %r failed", listener)
