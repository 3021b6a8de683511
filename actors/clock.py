"""Time, injected.

Nothing else under ``actors/`` reads the clock: breakers take a :class:`Clock` so that tests
(and the property-based model) can step time by hand.  A clock gives two readings, a monotonic
one for deadlines and durations and a wall one for the epoch timestamps shown to people, and it
runs the one kind of timer the actors need (the OPEN state's break timer).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What a breaker needs to know about time."""

    def now(self) -> float:
        """Monotonic seconds; only differences mean anything."""
        ...

    def wall(self, monotonic: float) -> float:
        """The epoch time (seconds) at which this clock read ``monotonic``."""
        ...

    def call_at(
        self, deadline: float, callback: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> TimerHandle:
        """Run ``callback`` once ``now() >= deadline``.

        ``loop`` is the event loop of the actor system that asks; a real clock uses it, a manual
        clock runs due callbacks from :meth:`ManualClock.advance` instead.  The callback must be
        safe to run on any thread (the actors' callbacks only post a message).
        """
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic``, the same reading asyncio's loop uses for its timers."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        # A bound builtin in an instance slot: one attribute load and a C call on the hot path.
        self.now: Callable[[], float] = time.monotonic

    def wall(self, monotonic: float) -> float:
        return time.time() - (time.monotonic() - monotonic)

    def call_at(
        self, deadline: float, callback: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> TimerHandle:
        # loop.time() is time.monotonic() for asyncio's loops, so the deadline carries over as is.
        return loop.call_at(deadline, callback)

    def __repr__(self) -> str:
        return "<MonotonicClock>"


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to, for tests.

    :meth:`advance` runs every timer that falls due, in deadline order, on the calling thread;
    the breaker's timer callbacks only post a message, so the actor still does the work on its
    own loop.
    """

    def __init__(self, start: float = 1_000.0, *, epoch: float = 1_700_000_000.0) -> None:
        self._now = start
        self._epoch_offset = epoch - start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self, monotonic: float) -> float:
        return monotonic + self._epoch_offset

    def call_at(
        self, deadline: float, callback: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> TimerHandle:
        timer = _ManualTimer(callback)
        heapq.heappush(self._timers, (deadline, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and run the timers that fall due."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def __repr__(self) -> str:
        return f"<ManualClock now={self._now:.3f} timers={self.pending_timers}>"
