"""One adapter per library: how to make a breaker, guard a call with it, trip it, look it up.

Each adapter uses the library's own fastest documented way to guard a call (its ``call`` /
``call_async`` method, its decorator, or its context manager), configured alike: trip after
five failures (interlock: its failure-rate rule), stay open for an hour.  What a library cannot
do is said in ``unsupported`` with the reason, and that scenario shows "n/a" for it.

Versions checked against the installed packages: pybreaker 1.4, aiobreaker 1.2, purgatory 3.0,
circuitbreaker 2.1, interlock-cb 2.8.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from tests.bench.loops import Block, Call, Errors, Guarded

OPEN_SECONDS = 3600
THRESHOLD = 5

#: Scenario capabilities a peer may lack (keys of ``Peer.unsupported``).
ASYNC = "async"
THREADS = "threads"


class TripFailure(Exception):
    """Raised by the function used to trip a breaker."""


class Peer:
    """A circuit-breaker library, as the benchmark drives it."""

    name: str = ""
    open_errors: Errors = ()
    #: capability -> why this library cannot take part (ASYNC, THREADS)
    unsupported: ClassVar[Mapping[str, str]] = {}

    def new(self, name: str) -> Any:
        """A fresh, idle breaker (also what row 5 measures)."""
        raise NotImplementedError

    async def new_async(self, name: str) -> Any:
        """A fresh breaker for asyncio use (most libraries: the same object)."""
        return self.new(name)

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        raise NotImplementedError

    def guard_async(self, breaker: Any, fn: Callable[[], Awaitable[Any]]) -> Guarded:
        raise NotImplementedError

    def registry(self) -> Callable[[str], Any]:
        """A get-or-create-by-name lookup (row 7); a dict unless the library has a registry."""
        table: dict[str, Any] = {}

        def get(name: str) -> Any:
            breaker = table.get(name)
            if breaker is None:
                breaker = table[name] = self.new(name)
            return breaker

        return get

    def registry_async(self) -> Callable[[str], Awaitable[Any]]:
        """The async twin of :meth:`registry` (row 7 runs on an event loop)."""
        get = self.registry()

        async def get_async(name: str) -> Any:
            return get(name)

        return get_async

    def finish_sync(self, breaker: Any, calls: int) -> Callable[[], None] | None:
        """What a timed sync loop of ``calls`` calls must also wait for (None: nothing)."""
        return None

    def forget(self) -> None:
        """Drop whatever the library keeps process-wide about the breakers made so far."""

    def tidy(self, breaker: Any) -> None:
        """Between measurements: undo what would make the *next* contestant pay for this one."""


def trip_sync(peer: Peer, breaker: Any) -> None:
    """Fail calls through ``breaker`` until it rejects one; raise if it never does."""
    guarded = peer.guard_sync(breaker, _fail_sync)
    for _ in range(1_000):
        try:
            once_sync(guarded)
        except peer.open_errors:
            return
        except TripFailure:
            continue
    raise RuntimeError(f"{peer.name}: the breaker did not open after 1,000 failures")


async def trip_async(peer: Peer, breaker: Any) -> None:
    """The async twin of :func:`trip_sync`."""
    guarded = peer.guard_async(breaker, _fail_async)
    for _ in range(1_000):
        try:
            await once_async(guarded)
        except peer.open_errors:
            return
        except TripFailure:
            continue
    raise RuntimeError(f"{peer.name}: the breaker did not open after 1,000 failures")


def _fail_sync() -> None:
    raise TripFailure


async def _fail_async() -> None:
    raise TripFailure


def once_sync(guarded: Guarded) -> Any:
    """One guarded call, outside any timing."""
    if isinstance(guarded, Call):
        return guarded.call(*guarded.args)
    with guarded.block:
        return guarded.fn()


async def once_async(guarded: Guarded) -> Any:
    """One awaited guarded call, outside any timing."""
    if isinstance(guarded, Call):
        return await guarded.call(*guarded.args)
    async with guarded.block:
        return await guarded.fn()


# -- the peers -----------------------------------------------------------------------------


class PyBreaker(Peer):
    name = "pybreaker"
    unsupported: ClassVar[Mapping[str, str]] = {
        ASYNC: "no asyncio API (its call_async needs Tornado)"
    }

    def __init__(self) -> None:
        import pybreaker

        self._module = pybreaker
        self.open_errors = (pybreaker.CircuitBreakerError,)

    def new(self, name: str) -> Any:
        return self._module.CircuitBreaker(
            fail_max=THRESHOLD, reset_timeout=OPEN_SECONDS, name=name
        )

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        return Call(breaker.call, (fn,))


class AioBreaker(Peer):
    name = "aiobreaker"
    unsupported: ClassVar[Mapping[str, str]] = {
        THREADS: "not thread-safe (no lock around its state)"
    }

    def __init__(self) -> None:
        import aiobreaker  # type: ignore[import-untyped]

        self._module = aiobreaker
        self.open_errors = (aiobreaker.CircuitBreakerError,)

    def new(self, name: str) -> Any:
        return self._module.CircuitBreaker(
            fail_max=THRESHOLD, timeout_duration=timedelta(seconds=OPEN_SECONDS), name=name
        )

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        return Call(breaker.call, (fn,))

    def guard_async(self, breaker: Any, fn: Callable[[], Awaitable[Any]]) -> Guarded:
        return Call(breaker.call_async, (fn,))


class Purgatory(Peer):
    """purgatory's breakers live in a factory's unit of work; its idiom is ``with breaker:``.

    The breaker object is fetched once and reused (its decorator fetches it on every call,
    which is several times slower and not what a careful user would write).
    """

    name = "purgatory"
    unsupported: ClassVar[Mapping[str, str]] = {
        THREADS: "not thread-safe (no lock around its state)"
    }

    def __init__(self) -> None:
        import purgatory
        from purgatory.domain.model import OpenedState

        self._module = purgatory
        self.open_errors = (OpenedState,)
        self.forget()

    def new(self, name: str) -> Any:
        return self._sync_factory.get_breaker(name)

    async def new_async(self, name: str) -> Any:
        return await self._async_factory.get_breaker(name)

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        return Block(breaker, fn)

    def guard_async(self, breaker: Any, fn: Callable[[], Awaitable[Any]]) -> Guarded:
        return Block(breaker, fn)

    def registry_async(self) -> Callable[[str], Awaitable[Any]]:
        factory = self._module.AsyncCircuitBreakerFactory(
            default_threshold=THRESHOLD, default_ttl=OPEN_SECONDS
        )
        return factory.get_breaker

    def forget(self) -> None:
        # Fresh factories: a factory's unit of work holds every breaker it ever made.
        self._sync_factory = self._module.SyncCircuitBreakerFactory(
            default_threshold=THRESHOLD, default_ttl=OPEN_SECONDS
        )
        self._async_factory = self._module.AsyncCircuitBreakerFactory(
            default_threshold=THRESHOLD, default_ttl=OPEN_SECONDS
        )

    def tidy(self, breaker: Any) -> None:
        # purgatory raises the *same* OpenedState instance for every rejection, so its
        # traceback grows by two entries (and keeps a frame alive) per rejection.  That cost is
        # inside its timings; here, between measurements, we cut the chain so that the garbage
        # it keeps does not slow the collector down for the contestants that follow.
        breaker.context._state.__traceback__ = None


class CircuitBreakerLib(Peer):
    """circuitbreaker (fabfuel): only its decorator checks the state, so we guard with it."""

    name = "circuitbreaker"
    unsupported: ClassVar[Mapping[str, str]] = {
        THREADS: "not thread-safe (no lock around its state)"
    }

    def __init__(self) -> None:
        import circuitbreaker  # type: ignore[import-untyped]

        self._module = circuitbreaker
        self.open_errors = (circuitbreaker.CircuitBreakerError,)

    def new(self, name: str) -> Any:
        return self._module.CircuitBreaker(
            failure_threshold=THRESHOLD, recovery_timeout=OPEN_SECONDS, name=name
        )

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        return Call(breaker.decorate(fn))

    def guard_async(self, breaker: Any, fn: Callable[[], Awaitable[Any]]) -> Guarded:
        return Call(breaker.decorate(fn))


class Interlock(Peer):
    name = "interlock-cb"

    def __init__(self) -> None:
        import interlock

        self._module = interlock
        self.config = interlock.Config(wait_duration_in_open=float(OPEN_SECONDS))
        self.open_errors = (interlock.CircuitOpenError,)

    def new(self, name: str) -> Any:
        return self._module.CircuitBreaker(name=name, config=self.config)

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        return Call(breaker.call_sync, (fn,))

    def guard_async(self, breaker: Any, fn: Callable[[], Awaitable[Any]]) -> Guarded:
        return Call(breaker.call_async, (fn,))

    def registry(self) -> Callable[[str], Any]:
        return self._module.Registry(config=self.config).get


# -- breakerd --------------------------------------------------------------------------------


class Breakerd(Peer):
    """breakerd through its public facade, ``service.circuit_breaker``.

    Breakers run on the process-wide actor system: in an async worker it binds to the worker's
    event loop on first use; in a sync worker it runs its own loop thread, so sync calls hand
    their outcomes to another thread and :meth:`finish_sync` makes the timing wait for them.
    """

    name = "breakerd"

    def __init__(self, config: Any = None) -> None:
        from service import circuit_breaker

        self._module = circuit_breaker
        self.config = config or circuit_breaker.CircuitBreakerConfig(
            failure_threshold=THRESHOLD, timeout_duration=float(OPEN_SECONDS)
        )
        self.open_errors = (circuit_breaker.CircuitBreakerOpenError,)

    def new(self, name: str) -> Any:
        return self._module.CircuitBreaker(self.config, name=name)

    async def registered_async(self, name: str) -> Any:
        """A breaker from the process-wide registry (named: it can join a cluster)."""
        return self._module.get_circuit_breaker(name, self.config)

    def guard_sync(self, breaker: Any, fn: Callable[[], Any]) -> Guarded:
        return Call(breaker.call, (fn,))

    def guard_async(self, breaker: Any, fn: Callable[[], Awaitable[Any]]) -> Guarded:
        return Call(breaker.call_async, (fn,))

    def finish_sync(self, breaker: Any, calls: int) -> Callable[[], None]:
        """Call right before a timed sync loop of ``calls`` calls; the returned function (run
        inside the timing) waits until the actor has counted ``calls`` more calls than it has now.

        ``breaker.metrics`` is an ask, so it is answered after every outcome posted before it;
        the loop only repeats if that contract were ever broken (then it still ends, at the
        deadline, with an error rather than a flattering figure).
        """
        target = breaker.metrics.total_calls + calls

        def finish() -> None:
            deadline = time.monotonic() + 30.0
            while breaker.metrics.total_calls < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{breaker!r} never counted {calls} calls")

        return finish

    @staticmethod
    def assert_drained(breaker: Any) -> None:
        """Raise if the actor still holds outcomes: the timing would not have paid for them.

        Reads the actor's private queues on purpose: asking the actor would drain them.
        """
        actor = breaker._actor
        if actor._tallies or actor._mailbox:
            raise RuntimeError(f"{breaker!r}: work left undrained after the timed loop")

    def system(self) -> Any:
        """A fresh, unstarted actor system (row 7 uses one per round: ``async with`` it)."""
        return self._module.ActorSystem()


class BreakerdOwnConfig(Breakerd):
    """breakerd as ``CircuitBreaker(CircuitBreakerConfig(...), name)`` in a loop builds it: a
    config object of its own per breaker (row 5's second figure; equal configs are interned)."""

    name = "breakerd, own config"

    def new(self, name: str) -> Any:
        module = self._module
        config = module.CircuitBreakerConfig(
            failure_threshold=THRESHOLD, timeout_duration=float(OPEN_SECONDS)
        )
        return module.CircuitBreaker(config, name=name)


PEER_TYPES: tuple[type[Peer], ...] = (
    PyBreaker,
    AioBreaker,
    Purgatory,
    CircuitBreakerLib,
    Interlock,
)


def all_peers() -> list[Peer]:
    """The five peers, in the table's column order."""
    return [peer_type() for peer_type in PEER_TYPES]


def peer_named(name: str) -> Peer:
    """One contestant by name (breakerd included), importing only its library."""
    everyone: tuple[type[Peer], ...] = (*PEER_TYPES, Breakerd)
    for peer_type in everyone:
        if peer_type.name == name:
            return peer_type()
    raise ValueError(f"no contestant named {name!r}")
