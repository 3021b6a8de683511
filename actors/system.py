"""The actor system: one runtime (loop binding, scheduling, timers), one bus, named breakers.

Two ways to have one:

- ``async with ActorSystem() as system:`` runs it on the host application's running loop, inside
  a task group of its own; leaving the block drains every mailbox, lets bus subscribers finish
  what they were handed, and closes the system (later calls raise ``ActorSystemClosedError``).
- :func:`default_system` is the process-wide system behind the registry.  It binds lazily: to
  the running loop of its first async user, or to a daemon thread of its own for purely
  synchronous programs, and moves when its loop ends (see ``actors.runtime``), so its breakers
  keep their state across ``asyncio.run()`` calls and work from plain threads afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

from actors.breaker import Breaker, BreakerActor
from actors.bus import EventBus
from actors.clock import Clock, MonotonicClock
from actors.cluster import ClusterLink
from actors.config import DEFAULT_CONFIG, CircuitBreakerConfig, interned
from actors.errors import ActorSystemClosedError, ConfigurationError
from actors.eviction import Eviction, check_limits
from actors.machine import BreakerData
from actors.messages import Command, ProbeLeaseDecided, UseLocalCounts
from actors.runtime import Actor, Runtime

T = TypeVar("T")

#: What :meth:`ActorSystem.read_all` runs per breaker: ``(name, data or None, now, epoch)``.
Reader = Callable[[str, BreakerData | None, float, float], T]


class ActorSystem:
    """Hosts breaker actors (and any other actor) on one event loop.

    ``max_idle`` (seconds) and ``max_breakers`` turn on eviction of named breakers that are
    idle or least recently used (see ``actors.eviction``); both are off by default.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        name: str = "breakerd",
        cluster: ClusterLink | None = None,
        max_idle: float | None = None,
        max_breakers: int | None = None,
        _floating: bool = False,
    ) -> None:
        check_limits(max_idle, max_breakers)
        self.name = name
        self.cluster: ClusterLink | None = None
        self._pending_cluster = cluster
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.runtime = Runtime(self.clock, floating=_floating, name=name)
        self.bus = EventBus(self.runtime)
        self._breakers: dict[str, Breaker] = {}
        # Active unregistered actors (named ones are in `_breakers`; a dormant one has nothing
        # to close at shutdown).  One bound method shared by every actor, rather than one each.
        self._actors: weakref.WeakSet[BreakerActor] = weakref.WeakSet()
        self._track = self._actors.add
        self._task_group: anyio.abc.TaskGroup | None = None
        self._cluster_scope: anyio.CancelScope | None = None
        self._create_lock = threading.Lock()  # guards the name table, not breaker state
        self._batch_actor: _Batcher | None = None
        self._eviction: Eviction | None = None
        if max_idle is not None or max_breakers is not None:
            self._eviction = Eviction(max_idle, max_breakers)

    def __repr__(self) -> str:
        return f"<ActorSystem {self.name!r} breakers={len(self._breakers)} {self.runtime!r}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> ActorSystem:
        if self.runtime.floating:
            raise RuntimeError("the default actor system starts by itself; do not enter it")
        if self._task_group is not None or self.runtime.closed:
            raise RuntimeError(f"actor system {self.name!r} can only be started once")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self.runtime.attach(asyncio.get_running_loop(), task_group)
        if self._pending_cluster is not None:
            self.attach_cluster(self._pending_cluster)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        assert task_group is not None, "not started"
        try:
            await self._drain()
        finally:
            self._close()
        return await task_group.__aexit__(exc_type, exc, tb)

    start = __aenter__

    async def stop(self) -> None:
        """The other half of :meth:`start`; call it from the task that started the system."""
        await self.__aexit__(None, None, None)

    async def _drain(self) -> None:
        """Handle everything already posted, and let subscribers take what they were given."""
        runtime = self.runtime
        while True:
            runtime.drain_all()
            await anyio.sleep(0)
            if not runtime._ready and not self.bus._has_pending():
                return
            await anyio.sleep(0.001)

    def _close(self) -> None:
        runtime = self.runtime
        runtime.closed = True
        if self._cluster_scope is not None:
            self._cluster_scope.cancel()  # a link runs until cancelled: it stops with the system
        runtime.drain_all()  # answers any ask that slipped in before the flag
        named = [breaker._actor for breaker in self._breakers.values()]
        for actor in [*named, *self._actors]:  # unregistered breakers close too
            if actor.dormant:
                continue  # its gate already sends callers to the slow path, which raises
            runtime.cancel_timer(actor)
            actor.close_gate()
            for envelope in actor._mailbox:
                reply = getattr(envelope, "reply", None)
                if reply is not None:
                    reply.fail(ActorSystemClosedError(f"actor system {self.name!r} closed"))

    # -- breakers ----------------------------------------------------------------------------

    def breaker(
        self, name: str, config: CircuitBreakerConfig | None = None, *, cls: type[Breaker] = Breaker
    ) -> Breaker:
        """The breaker called ``name`` in this system, created on first use.

        Asking again with a different config raises ``ValueError``: silently keeping one of the
        two would hide a configuration mistake.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if config is not None and not isinstance(config, CircuitBreakerConfig):
            raise TypeError(f"config: expected CircuitBreakerConfig, got {type(config).__name__}")
        eviction = self._eviction
        with self._create_lock:
            existing = self._breakers.get(name)
            if eviction is not None:
                now = self.clock.now()
                eviction.touch(name, now)
                sweep = eviction.due(now, len(self._breakers) + (existing is None))
            created = existing is None
            if existing is None:
                existing = self._create(name, config or DEFAULT_CONFIG, cls, None)
                self._breakers[name] = existing
                cluster = self.cluster
                if cluster is not None:
                    # Only named breakers join: the link reaches breakers by name.
                    existing._actor.join_cluster(cluster)
                    cluster.breaker_joined(name)
        if eviction is not None and sweep:
            self._evict_soon()  # outside the lock: the sweep takes it
        if created:
            return existing
        if config is not None and config != existing.config:
            raise ValueError(
                f"circuit breaker {name!r} already exists with a different config "
                f"({existing.config!r}); reuse it, or pick another name"
            )
        return existing

    def create_breaker(
        self, name: str, config: CircuitBreakerConfig | None = None, *, cls: type[Breaker] = Breaker
    ) -> Breaker:
        """A new breaker that this system runs but does not list by name (no registry, and
        so no cluster: it always decides alone)."""
        if self.runtime.closed:
            raise ActorSystemClosedError(f"actor system {self.name!r} is closed")
        return self._create(name, config or DEFAULT_CONFIG, cls, self._track)

    def _create(
        self,
        name: str,
        config: CircuitBreakerConfig,
        cls: type[Breaker],
        track: Callable[[BreakerActor], None] | None,
    ) -> Breaker:
        return cls(BreakerActor(name, interned(config), self.runtime, self.bus, track))

    # -- cluster mode (see actors.cluster) ----------------------------------------------------

    def attach_cluster(self, cluster: ClusterLink) -> None:
        """Make this system's named breakers act as one with other replicas' through
        ``cluster``, whose ``run`` starts in the system's task group."""
        if self.cluster is not None:
            raise RuntimeError(f"actor system {self.name!r} already has a cluster link")
        self.cluster = cluster
        cluster.attached(self)  # listening before any breaker can ask it for a lease
        for breaker in self._breakers.values():
            breaker._actor.join_cluster(cluster)

        async def run_link() -> None:
            if self.runtime.closed:
                return
            with anyio.CancelScope() as scope:
                self._cluster_scope = scope
                await cluster.run(self)

        self.runtime.spawn(run_link)

    def detach_cluster(self) -> None:
        """Stop the cluster link and let every breaker decide alone again (on the runtime's
        thread).  A breaker that was waiting for a probe lease is granted it locally."""
        cluster, self.cluster = self.cluster, None
        if cluster is None:
            return
        if self._cluster_scope is not None:
            self._cluster_scope.cancel()
            self._cluster_scope = None
        for breaker in self._breakers.values():
            actor = breaker._actor
            actor.join_cluster(None)
            if actor.dormant:
                continue  # no counts and no lease to give back: leave it asleep
            actor.tell(UseLocalCounts())
            if actor.data.lease_pending:
                actor.tell(ProbeLeaseDecided(generation=actor.data.generation, granted=True))

    def post(self, name: str, message: Command) -> bool:
        """Tell the named breaker ``message`` (any thread); False if there is no such breaker."""
        breaker = self._breakers.get(name)
        if breaker is None:
            return False
        breaker._actor.tell(message)
        return True

    def apply_all(self, message: Command) -> dict[str, Any]:
        """Apply ``message`` (``GetSnapshot()``, ``Reset()``, ...) to every named breaker in
        one pass on the runtime's thread: name -> the reply, or the ``Exception`` it raised.

        One ask in all rather than one per breaker, one clock reading, and dormant breakers
        stay dormant (see ``BreakerActor.apply_now``): 100,000 breakers take a fraction of a
        second.  Safe from any thread; raises ``ActorSystemClosedError`` once closed.
        """
        result: dict[str, Any] = self._batcher().ask(self._apply(message))
        return result

    async def apply_all_async(self, message: Command) -> dict[str, Any]:
        """The async twin of :meth:`apply_all`."""
        result: dict[str, Any] = await self._batcher().ask_async(self._apply(message))
        return result

    def read_all(self, reader: Reader[T]) -> dict[str, T | Exception]:
        """``reader(name, data, now, epoch)`` for every named breaker, in one pass on the
        runtime's thread, after each one's pending outcomes (see ``BreakerActor.read_now``):
        for reads that need less than a full snapshot.  Same contract as :meth:`apply_all`."""
        result: dict[str, T | Exception] = self._batcher().ask(self._read(reader))
        return result

    async def read_all_async(self, reader: Reader[T]) -> dict[str, T | Exception]:
        """The async twin of :meth:`read_all`."""
        result: dict[str, T | Exception] = await self._batcher().ask_async(self._read(reader))
        return result

    def _apply(self, message: Command) -> _Visit:
        return _Visit(lambda actor, now, epoch: actor.apply_now(message, now, epoch), self)

    def _read(self, reader: Reader[T]) -> _Visit:
        return _Visit(lambda actor, now, epoch: actor.read_now(reader, now, epoch), self)

    def _batcher(self) -> _Batcher:
        batcher = self._batch_actor
        if batcher is None:
            with self._create_lock:
                if self._batch_actor is None:
                    self._batch_actor = _Batcher(self.runtime)
                batcher = self._batch_actor
        return batcher

    def remove_breaker(self, name: str) -> bool:
        """Remove the breaker called ``name``; False if there is none.  Any thread.

        Its pending outcomes are applied first, its timer stops, the bus publishes
        ``BreakerRemoved`` (health and telemetry forget it), and a handle still held raises
        :class:`~actors.errors.BreakerRemovedError` on its next use.  Asking for ``name``
        again gives a new breaker.  After the system closed, this only forgets the name.
        """
        with self._create_lock:
            breaker = self._breakers.pop(name, None)
            if self._eviction is not None:
                self._eviction.forget(name)
        if breaker is None:
            return False
        if not self.runtime.closed:
            self._batcher().ask(_Call(lambda now, epoch: breaker._actor.retire(epoch)))
        return True

    def enable_eviction(
        self, *, max_idle: float | None = None, max_breakers: int | None = None
    ) -> None:
        """Turn on (or change) eviction after construction, as the constructor's arguments
        do; the breakers already registered count as used now.  Any thread."""
        check_limits(max_idle, max_breakers)
        if max_idle is None and max_breakers is None:
            raise ConfigurationError("enable_eviction: give max_idle, max_breakers or both")
        now = self.clock.now()
        with self._create_lock:
            eviction = Eviction(max_idle, max_breakers)
            if self._eviction is not None:
                eviction.touched = self._eviction.touched
            else:
                eviction.touched = dict.fromkeys(self._breakers, now)
            self._eviction = eviction

    def evict_idle(self) -> list[str]:
        """Evict now what ``max_idle`` and ``max_breakers`` say must go (see
        ``actors.eviction``); the names evicted, oldest first.  Any thread."""
        if self._eviction is None or self.runtime.closed:
            return []
        evicted: list[str] = self._batcher().ask(_Call(self._sweep))
        return evicted

    def _evict_soon(self) -> None:
        """A lookup found a sweep due: run it on the runtime's thread without waiting."""
        if not self.runtime.closed:
            self._batcher().tell(_Call(self._sweep))

    def _sweep(self, now: float, epoch: float) -> list[str]:
        eviction = self._eviction
        assert eviction is not None
        with self._create_lock:
            names, over = eviction.candidates(now, len(self._breakers))
            eviction.last_sweep = now
        idle_before = eviction.idle_before(now)
        evicted: list[str] = []
        for name in names:
            with self._create_lock:
                breaker = self._breakers.get(name)
                touched = eviction.touched.get(name)
            if breaker is None or touched is None:
                continue
            last = breaker._actor.last_activity(touched)
            if last is None:  # OPEN, HALF_OPEN, forced or probing: never evicted
                continue
            if len(evicted) < over or last <= idle_before:
                with self._create_lock:
                    if self._breakers.get(name) is not breaker:
                        continue  # removed meanwhile
                    del self._breakers[name]
                    eviction.forget(name)
                breaker._actor.retire(epoch, evicted=True)
                evicted.append(name)
            elif last > touched:
                with self._create_lock:  # used through a held handle: now in its place
                    eviction.touch(name, last)
        return evicted

    def breakers(self) -> dict[str, Breaker]:
        """Every named breaker of this system."""
        return dict(self._breakers)

    def get(self, name: str) -> Breaker | None:
        return self._breakers.get(name)

    def attach_actor(self, actor_cls: type[Actor], *args: Any, **kwargs: Any) -> Actor:
        """Create an actor of ``actor_cls`` on this system's runtime."""
        return actor_cls(self.runtime, *args, **kwargs)


class _Visit:
    """Run ``visit(actor, now, epoch)`` for every named breaker of ``system``."""

    __slots__ = ("system", "visit")

    def __init__(self, visit: Callable[[BreakerActor, float, float], Any], system: ActorSystem):
        self.visit = visit
        self.system = system


class _Call:
    """Run ``call(now, epoch)`` once."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[[float, float], Any]) -> None:
        self.call = call


class _Batcher(Actor):
    """Runs a :class:`_Visit` or a :class:`_Call` on the runtime's thread, where breakers may
    be drained."""

    __slots__ = ()

    def _receive(self, message: _Visit | _Call) -> Any:
        clock = self._runtime.clock
        now = clock.now()
        epoch = clock.wall(now)
        if isinstance(message, _Call):
            return message.call(now, epoch)
        visit = message.visit
        results: dict[str, Any] = {}
        for name, breaker in message.system.breakers().items():
            try:
                results[name] = visit(breaker._actor, now, epoch)
            except Exception as exc:  # one broken breaker must not hide the others
                results[name] = exc
        return results


_default: ActorSystem | None = None
_default_lock = threading.Lock()


def default_system() -> ActorSystem:
    """The process-wide system behind the registry (created on first use)."""
    global _default
    system = _default
    if system is None:
        with _default_lock:
            if _default is None:
                _default = ActorSystem(name="breakerd-default", _floating=True)
            system = _default
    return system
