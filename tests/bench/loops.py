"""The timed loops: one shape per way a library lets you guard a call, the same for everyone.

A guarded call is either a :class:`Call` (``call(*args)``: ``breaker.call_async(fn)``, a
decorated function, or the bare function itself) or a :class:`Block` (``with breaker: fn()``,
for libraries whose idiom is a context manager).  The loops add no frame of their own around a
library's entry point, so every contestant, the bare function included, pays exactly the same
loop cost and the differences are the libraries'.

Every async loop ends with ``await asyncio.sleep(0)`` *inside* the timing: breakerd's actor
drains the outcomes posted during the loop on that tick, so its deferred work is paid for in the
figure; for everyone else the tick costs the same fraction of a microsecond per loop.  The sync
loops take a ``finish`` callback, also timed, which for breakerd waits until its actor has
counted every call (see ``peers.Breakerd``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from time import perf_counter
from typing import Any

Errors = tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Call:
    """Guard by calling ``call(*args)``."""

    call: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Block:
    """Guard by running ``fn()`` inside ``with block:`` (or ``async with``)."""

    block: Any
    fn: Callable[[], Any]


Guarded = Call | Block


async def time_async(guarded: Guarded, calls: int, errors: Errors = ()) -> float:
    """Seconds for ``calls`` awaited guarded calls (``errors`` are caught and counted as done),
    plus one loop tick for deferred work."""
    if isinstance(guarded, Call):
        call, args = guarded.call, guarded.args
        start = perf_counter()
        for _ in repeat(None, calls):
            try:  # noqa: SIM105 - contextlib.suppress would add a frame to every call
                await call(*args)
            except errors:
                pass
        await asyncio.sleep(0)  # breakerd's drain runs here, inside the timing
        return perf_counter() - start
    block, fn = guarded.block, guarded.fn
    start = perf_counter()
    for _ in repeat(None, calls):
        try:
            async with block:
                await fn()
        except errors:
            pass
    await asyncio.sleep(0)
    return perf_counter() - start


def run_sync(guarded: Guarded, calls: int, errors: Errors = ()) -> None:
    """Make ``calls`` guarded calls on this thread (untimed; threads time themselves)."""
    if isinstance(guarded, Call):
        call, args = guarded.call, guarded.args
        for _ in repeat(None, calls):
            try:  # noqa: SIM105 - contextlib.suppress would add a frame to every call
                call(*args)
            except errors:
                pass
        return
    block, fn = guarded.block, guarded.fn
    for _ in repeat(None, calls):
        try:
            with block:
                fn()
        except errors:
            pass


def time_sync(
    guarded: Guarded, calls: int, errors: Errors = (), finish: Callable[[], None] | None = None
) -> float:
    """Seconds for ``calls`` guarded calls on this thread, plus ``finish()``."""
    start = perf_counter()
    run_sync(guarded, calls, errors)
    if finish is not None:
        finish()
    return perf_counter() - start


async def time_tasks(guarded: Guarded, tasks: int, calls: int) -> float:
    """Seconds for ``tasks`` concurrent tasks to make ``calls`` guarded calls each."""
    if isinstance(guarded, Call):
        call, args = guarded.call, guarded.args

        async def worker() -> None:
            for _ in repeat(None, calls):
                await call(*args)

    else:
        block, fn = guarded.block, guarded.fn

        async def worker() -> None:
            for _ in repeat(None, calls):
                async with block:
                    await fn()

    start = perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in repeat(None, tasks):
            group.create_task(worker())
    await asyncio.sleep(0)
    return perf_counter() - start
