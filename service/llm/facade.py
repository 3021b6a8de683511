"""The sync facade's engine: a private event loop on a daemon thread, one per client.

``client.complete(...)`` runs ``complete_async(...)`` on this loop and waits for the result, so
it works from plain threads and from programs that have no loop at all.  Called on a thread
whose loop is running, it raises instead: a blocking wait there would freeze that loop for the
whole LLM call (and deadlock if the answer needed it), and ``await client.complete_async()``
is the right call in that place anyway.

Alternatives considered: ``asyncio.run`` per call makes a new loop (and a new HTTP session)
per call; anyio's blocking portal runs on a non-daemon worker that would keep the interpreter
from exiting when a client is never closed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Starts on first use; :meth:`close` stops it.

    ``on_stop`` runs on the loop when it is told to stop, before the loop cancels what is left:
    the client closes its session there (a session closed while being cancelled may leak).
    """

    __slots__ = ("_closed", "_lock", "_loop", "_on_stop", "_stop", "_thread", "name")

    def __init__(self, name: str, *, on_stop: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._on_stop = on_stop
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._thread else "idle"
        return f"<LoopThread {self.name!r} {state}>"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T], *, caller: str) -> T:
        """Run ``coro`` on the private loop and return its result (or raise its exception).

        Raises ``RuntimeError`` (closing ``coro`` unawaited) when the calling thread is running
        an event loop, naming ``caller`` and its async twin, or when the facade is closed.
        """
        try:
            loop = self._loop_for(caller)
        except BaseException:
            coro.close()  # never started: close it, or Python warns that it was never awaited
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: do not leave it running
            raise

    def _loop_for(self, caller: str) -> asyncio.AbstractEventLoop:
        """The private loop, started if need be, for a caller on this thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                f"{caller}() was called from a running event loop, where it would block the "
                f"loop; use 'await {caller}_async(...)' there"
            )
        with self._lock:
            if self._closed:
                raise RuntimeError("the LLM client is closed")
            if self._loop is None:
                ready = threading.Event()
                thread = threading.Thread(
                    target=asyncio.run, args=(self._serve(ready),), name=self.name, daemon=True
                )
                thread.start()
                ready.wait()
                self._thread = thread
            assert self._loop is not None
            return self._loop

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready.set()
        await self._stop.wait()
        await self._on_stop()

    def close(self) -> None:
        """Stop the loop and wait for its thread (unless called on that thread).  Idempotent."""
        with self._lock:
            self._closed = True
            loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # closed between the check and the call
                return
        if thread is not threading.current_thread():
            thread.join()
