"""Mailboxes, activation, supervision and the cross-thread hand-off.

How an actor runs
-----------------
An actor is an object with a mailbox (a plain list) and a ``_scheduled`` flag.  Posting appends
to the mailbox and, only if the actor is not already scheduled, puts it on its runtime's ready
queue.  The runtime drains ready actors from one loop callback on its event loop.  An idle actor
therefore holds no task and no coroutine: at 10,000 breakers a task each (about 1 KB) would cost
more than the breakers themselves.  Draining takes everything in the mailbox as one batch, so a
burst of posts costs one wake-up.

The list is safe to share between threads without a lock because under the GIL ``append``,
``len``, a slice copy and ``del lst[:n]`` are each atomic, and producers only ever append: the
drain copies the first ``n`` items and deletes exactly those, so an item appended meanwhile
stays for the next round.  The flag follows the classic protocol: the drain clears it *before*
reading the mailbox, producers set it *after* appending, so a wake-up can be doubled (harmless:
the second drain finds nothing) but never lost.

Asking
------
An ask is a message with a reply slot.  A caller on the runtime's own thread (an async caller on
the actor's loop, or a sync caller inside a coroutine there) drains the actor inline: it is the
only code running on that thread, so this is the same single-threaded drain the loop would have
run a moment later, without a round trip and without the deadlock a blocking wait would cause.
Callers on other threads wait on a ``SimpleQueue`` (sync) or a future of their own loop (async).

Supervision
-----------
Each message is handled inside ``try``: a handler that raises is logged, the asker gets
:class:`~actors.errors.ActorCrashedError` instead of waiting forever, and the actor's
``_restarted`` hook runs with its state intact (a breaker re-publishes its gate and re-arms its
timer).  The next message is handled as usual.

Binding
-------
A runtime is bound to one event loop at a time.  A system you start yourself binds to the loop
that starts it and closes with it.  The *floating* runtime of the registry's default system
binds lazily: to the running loop of the first async user, or, when the first user has no
running loop, to a daemon thread of its own.  When the loop it is bound to ends (its anchor task
is cancelled, as ``asyncio.run`` does on the way out), it unbinds; if anything is still pending
(a queued message, a break timer) it moves at once to its own thread, so nothing waits on a
dead loop.  Actor state lives in the actors, not in the loop, which is why breakers keep their
state across ``asyncio.run()`` calls.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from queue import Empty, SimpleQueue
from typing import Any

import anyio
import anyio.abc

from actors.clock import Clock, TimerHandle
from actors.errors import ActorCrashedError, ActorSystemClosedError

logger = logging.getLogger("actors.runtime")

_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_get_ident = threading.get_ident

# How often a thread blocked on an ask checks that the loop it waits for is still alive.
_LIVENESS_SLICE = 0.25


class Envelope:
    """A message plus the slot its answer goes to (None for a tell)."""

    __slots__ = ("message", "reply")

    def __init__(self, message: Any, reply: Reply | None) -> None:
        self.message = message
        self.reply = reply

    def __repr__(self) -> str:
        return f"<Envelope {type(self.message).__name__} ask={self.reply is not None}>"


class Reply:
    """Where an ask's answer goes; subclasses decide how the asker is woken."""

    __slots__ = ()

    def set(self, value: Any) -> None:
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        raise NotImplementedError


class _InlineReply(Reply):
    """For askers on the runtime's own thread, which drain the actor themselves."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any) -> None:
        self.value, self.done = value, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True


class _ThreadReply(Reply):
    """For a blocked thread: a ``SimpleQueue`` is the cheapest safe one-shot hand-off."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: SimpleQueue[tuple[Any, BaseException | None]] = SimpleQueue()

    def set(self, value: Any) -> None:
        self.queue.put((value, None))

    def fail(self, error: BaseException) -> None:
        self.queue.put((None, error))


class _FutureReply(Reply):
    """For an async asker on another loop: resolved on that loop, thread-safely.

    If the asker is cancelled before it takes the answer, ``abandoned`` gets the value, so that
    e.g. a half-open probe slot granted to nobody is given back.  That must not depend on the
    asker's loop running again (``asyncio.run`` cancels the asker and closes its loop, and a
    callback posted meanwhile never runs), so the answering thread and the cancelled asker each
    draw a turn (``next`` on an ``itertools.count`` is atomic under the GIL): whichever comes
    second knows that nobody will take the value and hands it to ``abandoned`` itself.
    """

    __slots__ = ("abandoned", "failed", "future", "loop", "turns", "value")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, abandoned: Callable[[Any], None] | None
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.abandoned = abandoned
        self.turns = itertools.count()
        self.value: Any = None
        self.failed = False

    def _resolve(self, value: Any, error: BaseException | None) -> None:
        future = self.future
        if future.done():  # cancelled: `give_up` and `set` decide who hands the value back
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def _abandon(self) -> None:
        if self.abandoned is not None and not self.failed:
            self.abandoned(self.value)

    def _post(self, value: Any, error: BaseException | None) -> None:
        if next(self.turns):  # the asker gave up first
            self._abandon()
            return
        try:
            self.loop.call_soon_threadsafe(self._resolve, value, error)
        except RuntimeError:  # the asker's loop is closed: nobody is waiting any more
            self._abandon()

    def set(self, value: Any) -> None:
        self.value = value
        self._post(value, None)

    def fail(self, error: BaseException) -> None:
        self.failed = True
        self._post(None, error)

    def give_up(self) -> None:
        """The asker was cancelled before taking the answer (runs on the asker's thread)."""
        if next(self.turns):  # answered first: the value is already here, and nobody takes it
            self._abandon()


def _started(coroutine: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
    """Hand an already created coroutine to ``start_soon`` (which wants a function)."""
    return coroutine


class Actor:
    """Base class: a mailbox drained by a runtime.  Subclasses implement :meth:`_receive`.

    Every handler runs on the runtime's loop thread (or inline on that same thread for an
    asker there), never concurrently with itself.
    """

    __slots__ = ("__weakref__", "_mailbox", "_runtime", "_scheduled")

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._mailbox: list[Any] = []
        self._scheduled = False

    # -- posting (any thread) ----------------------------------------------------------------

    def _post(self, item: Any) -> None:
        self._mailbox.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._runtime.schedule(self)

    def tell(self, message: Any) -> None:
        """Post ``message`` without waiting for it to be handled."""
        self._post(Envelope(message, None))

    def ask(self, message: Any) -> Any:
        """Post ``message`` and block until it is handled; return the handler's answer.

        Safe from any thread, including the runtime's own (the actor is drained inline there,
        so this never deadlocks a running loop).
        """
        runtime = self._runtime
        runtime.bind_for_caller()
        if runtime.thread_id == _get_ident():
            return self._ask_inline(message)
        reply = _ThreadReply()
        self._post(Envelope(message, reply))
        while True:
            try:
                value, error = reply.queue.get(timeout=_LIVENESS_SLICE)
            except Empty:
                runtime.check_alive()
                continue
            if error is not None:
                raise error
            return value

    async def ask_async(
        self, message: Any, *, abandoned: Callable[[Any], None] | None = None
    ) -> Any:
        """Post ``message`` and await the answer.  ``abandoned`` receives an answer that
        arrives after the awaiting task was cancelled."""
        runtime = self._runtime
        runtime.bind_for_caller()
        if runtime.thread_id == _get_ident():
            return self._ask_inline(message)
        reply = _FutureReply(asyncio.get_running_loop(), abandoned)
        self._post(Envelope(message, reply))
        try:
            return await reply.future
        except asyncio.CancelledError:
            reply.give_up()
            raise

    def _ask_inline(self, message: Any) -> Any:
        reply = _InlineReply()
        self._mailbox.append(Envelope(message, reply))
        self._drain()
        if reply.error is not None:
            raise reply.error
        if not reply.done:  # pragma: no cover - would mean the drain skipped our envelope
            raise RuntimeError(f"{self!r} did not answer {message!r}")
        return reply.value

    # -- draining (the runtime's thread) -----------------------------------------------------

    def _drain(self) -> None:
        self._scheduled = False
        mailbox = self._mailbox
        while mailbox:
            count = len(mailbox)
            batch = mailbox[:count]
            del mailbox[:count]
            self._receive_batch(batch)

    def _receive_batch(self, batch: list[Any]) -> None:
        """Handle one drained batch; the default hands each envelope to :meth:`_deliver`."""
        for envelope in batch:
            self._deliver(envelope)

    def _deliver(self, envelope: Envelope) -> None:
        reply = envelope.reply
        try:
            value = self._receive(envelope.message)
        except Exception as exc:
            logger.exception("%r failed on %r; restarting with its state intact", self, envelope)
            if reply is not None:
                error = ActorCrashedError(f"{self!r} failed while handling {envelope!r}")
                error.__cause__ = exc
                reply.fail(error)
            self._restarted()
            return
        if reply is not None:
            reply.set(value)

    def _receive(self, message: Any) -> Any:
        raise NotImplementedError

    def _restarted(self) -> None:
        """Runs after a handler raised; state is kept, so most actors need nothing here."""

    def _rebound(self) -> None:
        """Runs on the new loop after the runtime moved; re-arm anything loop-bound."""


class Runtime:
    """Schedules actors on one event loop at a time; owns their timers and helper tasks."""

    def __init__(self, clock: Clock, *, floating: bool, name: str = "actors") -> None:
        self.clock = clock
        self.name = name
        self.floating = floating
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._pending_spawns: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._ready: deque[Actor] = deque()
        self._dispatch_pending = False
        self._timers: dict[Actor, tuple[float, Callable[[], None], TimerHandle]] = {}
        self._bind_lock = threading.Lock()  # guards binding only, never actor state
        self._own_thread: threading.Thread | None = None
        self._idle_hooks: list[Callable[[], bool]] = []
        self._resume_hooks: list[Callable[[], None]] = []
        self._jobs: weakref.WeakSet[Coroutine[Any, Any, None]] = weakref.WeakSet()
        # Tasks that carry a spawn out of a loop callback into the task group (see _spawn_here).
        self._handoffs: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        where = "unbound" if self.loop is None else f"thread={self.thread_id}"
        state = "closed" if self.closed else where
        counts = f"ready={len(self._ready)} timers={len(self._timers)}"
        return f"<Runtime {self.name!r} {state} {counts}>"

    # -- scheduling --------------------------------------------------------------------------

    def schedule(self, actor: Actor) -> None:
        """Queue ``actor`` for a drain on the runtime's loop.  Any thread."""
        self._ready.append(actor)
        if not self._dispatch_pending:
            self._dispatch_pending = True
            self._wake()

    def _wake(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            if self.closed:
                self._dispatch_pending = False
                return  # a straggling outcome after shutdown; see ActorSystem.__aexit__
            loop = self._bind_somewhere()
            if loop is None:
                return  # binding re-woke the dispatcher itself
        if self.thread_id == _get_ident():
            loop.call_soon(self._dispatch)
        else:
            try:
                loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:  # closed between the check and the call
                self._dispatch_pending = False
                if not self.closed:
                    self._dispatch_pending = True
                    self._rebind_after_loss(loop)

    def _dispatch(self) -> None:
        ready = self._ready
        try:
            while ready:
                actor = ready.popleft()
                try:
                    actor._drain()
                except Exception:  # handlers are supervised per message; a last resort
                    logger.exception("%r failed outside a handler", actor)
                    actor._restarted()
        finally:
            # Lowered only now: an actor that one of these drains scheduled (a bus subscriber
            # told of a breaker's outcome) was drained above, in this same pass, rather than
            # by a second dispatch on the loop's next turn.  Another thread's schedule()
            # between the loop's last check and this line saw the flag up and did not wake
            # us: look again.
            self._dispatch_pending = False
            if ready:
                self._dispatch_pending = True
                self._wake()

    def drain_all(self) -> None:
        """Drain every ready actor now, on the runtime's thread (used at shutdown)."""
        self._dispatch()

    # -- timers (the runtime's thread) -------------------------------------------------------

    def start_timer(self, actor: Actor, deadline: float, callback: Callable[[], None]) -> None:
        self.cancel_timer(actor)
        loop = self.loop
        if loop is None or self.closed:
            return
        handle = self.clock.call_at(deadline, callback, loop)
        self._timers[actor] = (deadline, callback, handle)

    def cancel_timer(self, actor: Actor) -> None:
        entry = self._timers.pop(actor, None)
        if entry is not None:
            entry[2].cancel()

    # -- helper tasks ------------------------------------------------------------------------

    def spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``job`` as a task in the runtime's task group.  Any thread.  A closed runtime
        starts nothing (its task group is gone)."""
        if self.closed:
            return
        loop = self.loop
        if loop is None or loop.is_closed():
            self._pending_spawns.append(job)
            self._bind_somewhere()
            return
        if self.thread_id == _get_ident() and loop.is_running():
            self._spawn_here(job)
        else:
            # Another thread, or sync code on the loop's thread between two runs of the loop
            # (an inline ask there can publish): tasks can only start once the loop runs.
            loop.call_soon_threadsafe(self._spawn_here, job)

    def _spawn_here(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task_group = self._task_group
        if task_group is None:
            self._pending_spawns.append(job)
        elif _current_task() is not None:
            self._start_job(task_group, job)
        else:
            # A loop callback (a drain, a timer, a cross-thread hand-off) has no current task,
            # and anyio asks for one wherever sniffio is installed: it decides which async
            # library runs from the current task, so ``start_soon`` from here would raise
            # ``NoEventLoopError``.  A plain asyncio task needs no such question; it starts the
            # job in the task group one loop turn later.
            assert self.loop is not None
            handoff = self.loop.create_task(self._start_from_task(task_group, job))
            self._handoffs.add(handoff)
            handoff.add_done_callback(self._handoffs.discard)

    async def _start_from_task(
        self, task_group: anyio.abc.TaskGroup, job: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        if self._task_group is not task_group or self.closed:
            # The group ended (the loop is going, or the system closed) before this turn:
            # queue the job like any spawn without a group, for the next binding to start.
            if not self.closed:
                self._pending_spawns.append(job)
            return
        self._start_job(task_group, job)

    def _start_job(
        self, task_group: anyio.abc.TaskGroup, job: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        # Keep the coroutine: if the loop ends before the task's first step, asyncio never runs
        # it and anyio's wrapper leaves it "never awaited"; `_close_unstarted` closes it then.
        coroutine = job()
        self._jobs.add(coroutine)
        try:
            task_group.start_soon(_started, coroutine)
        except BaseException:
            coroutine.close()
            raise

    def _close_unstarted(self) -> None:
        for coroutine in list(self._jobs):
            if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                coroutine.close()

    def add_idle_hook(self, has_pending: Callable[[], bool]) -> None:
        """Register a check the runtime uses to decide whether it must keep running
        somewhere when its loop ends (e.g. a bus subscription with undelivered events)."""
        self._idle_hooks.append(has_pending)

    def add_resume_hook(self, hook: Callable[[], None]) -> None:
        """Register a callback run on the loop's thread each time the runtime binds to a loop.

        Helper tasks of an earlier loop are gone by then, some possibly cancelled before they
        ever ran (so their own clean-up never did): the hook restarts what they were doing."""
        self._resume_hooks.append(hook)

    # -- binding -----------------------------------------------------------------------------

    def bind_for_caller(self) -> None:
        """Make sure the runtime is bound before an ask decides between inline and waiting."""
        if self.closed:
            raise ActorSystemClosedError(f"actor system {self.name!r} is closed")
        loop = self.loop
        if loop is None or loop.is_closed():
            self._bind_somewhere()

    def attach(self, loop: asyncio.AbstractEventLoop, task_group: anyio.abc.TaskGroup) -> None:
        """Bind to ``loop`` (the caller's running loop) with ``task_group`` for helper tasks."""
        with self._bind_lock:
            self._attach_locked(loop, task_group)

    def _attach_locked(
        self, loop: asyncio.AbstractEventLoop, task_group: anyio.abc.TaskGroup | None
    ) -> None:
        self.loop = loop
        self.thread_id = _get_ident()
        self._task_group = task_group
        self._resume()

    def _resume(self) -> None:
        """On the newly bound loop's thread: re-arm timers, re-dispatch, start queued jobs."""
        timers, self._timers = self._timers, {}
        for actor, (deadline, callback, handle) in timers.items():
            handle.cancel()
            self.start_timer(actor, deadline, callback)
            actor._rebound()
        if self._task_group is not None:
            spawns, self._pending_spawns = self._pending_spawns, []
            for job in spawns:
                self._start_job(self._task_group, job)
        for hook in self._resume_hooks:
            hook()
        if self._ready:
            self._dispatch_pending = True
            assert self.loop is not None
            self.loop.call_soon(self._dispatch)
        else:
            self._dispatch_pending = False

    def detach(self) -> None:
        """Unbind (the loop is ending).  Pending work moves to the runtime's own thread."""
        with self._bind_lock:
            if self.loop is None:
                return
            old = self.loop
            self.loop = None
            self.thread_id = None
            self._task_group = None
            self._dispatch_pending = False
        if self.floating and not self.closed and self._has_pending_work():
            self._rebind_after_loss(old)

    def _has_pending_work(self) -> bool:
        return bool(self._ready or self._timers or self._pending_spawns) or any(
            hook() for hook in self._idle_hooks
        )

    def _rebind_after_loss(self, old: asyncio.AbstractEventLoop) -> None:
        with self._bind_lock:
            if self.loop is not None and self.loop is not old and not self.loop.is_closed():
                return
            self.loop = None
            self._start_own_thread_locked()

    def check_alive(self) -> None:
        """Called by a blocked asker now and then: move off a loop that has died."""
        loop = self.loop
        if self.closed:
            raise ActorSystemClosedError(f"actor system {self.name!r} is closed")
        if loop is None or loop.is_closed():
            self._bind_somewhere()
        elif not loop.is_running() and self.floating and self._own_thread is None:
            self._rebind_after_loss(loop)

    def _bind_somewhere(self) -> asyncio.AbstractEventLoop | None:
        """Bind the floating runtime: to the caller's running loop, else to its own thread.

        Returns the loop if the caller should post the wake-up itself, None if binding already
        re-dispatched the ready queue.
        """
        if not self.floating:
            raise ActorSystemClosedError(
                f"actor system {self.name!r} is not running (use 'async with ActorSystem()')"
            )
        with self._bind_lock:
            loop = self.loop
            if loop is not None and not loop.is_closed():
                return loop
            running = _get_running_loop()
            if running is not None:
                self._attach_locked(running, None)
                running.create_task(self._anchor(running), name=f"{self.name}-anchor")
            else:
                self._start_own_thread_locked()
            return None

    async def _anchor(self, loop: asyncio.AbstractEventLoop) -> None:
        """Holds the task group of a borrowed loop; its cancellation means the loop is ending."""
        try:
            async with anyio.create_task_group() as task_group:
                if self.loop is loop:
                    self._task_group = task_group
                    spawns, self._pending_spawns = self._pending_spawns, []
                    for job in spawns:
                        self._start_job(task_group, job)
                await anyio.sleep_forever()
        finally:
            if self.loop is loop:
                self._close_unstarted()
                self.detach()

    def _start_own_thread_locked(self) -> None:
        ready = threading.Event()
        thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"{self.name}-runtime", daemon=True
        )
        self._own_thread = thread
        thread.start()
        ready.wait()

    def _thread_main(self, ready: threading.Event) -> None:
        async def main() -> None:
            async with anyio.create_task_group() as task_group:
                # Called with the bind lock held by the starting thread, which waits on
                # `ready`; attach without taking the lock again.
                self._attach_locked(asyncio.get_running_loop(), task_group)
                ready.set()
                await anyio.sleep_forever()

        asyncio.run(main())
