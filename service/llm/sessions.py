"""One ``aiohttp.ClientSession`` per client per event loop, and nothing left unclosed.

An aiohttp session belongs to the loop it was made on, and a client may be used from several
loops over its life (``asyncio.run()`` twice, its own sync facade's loop, a host application's
loop).  So the pool keeps one session per loop, each with a *keeper* task on that loop: the
keeper waits until the pool closes the session, or until the loop cancels it on the way out
(``asyncio.run`` cancels every task before it closes the loop), and closes the session in both
cases.  That is what keeps "Unclosed client session" warnings away even when a caller forgets
:meth:`SessionPool.aclose`.

Alternatives considered: one session for the client's whole life breaks on the second loop;
a session per call gives up connection reuse; closing in ``__del__`` cannot await.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import aiohttp


class _Entry:
    __slots__ = ("keeper", "loop", "release", "session")

    def __init__(self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession) -> None:
        self.loop = loop
        self.session = session
        self.release = asyncio.Event()
        self.keeper: asyncio.Task[None] | None = None


class SessionPool:
    """Sessions of one client, keyed by event loop.  Thread-safe.

    The sessions' connectors have no limit of their own: each provider bounds its connections
    with its slots (``Provider.slot``), whose wait is timed apart from the request.
    """

    __slots__ = ("_closed", "_entries", "_lock")

    def __init__(self) -> None:
        self._entries: dict[asyncio.AbstractEventLoop, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SessionPool {state} sessions={len(self._entries)}>"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self) -> aiohttp.ClientSession:
        """The running loop's session, made on first use.  Call from a coroutine.

        Raises ``RuntimeError`` once the pool is closed.
        """
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None:
            return entry.session
        with self._lock:
            if self._closed:
                raise RuntimeError("the LLM client is closed")
            entry = self._entries.get(loop)
            if entry is None:
                connector = aiohttp.TCPConnector(limit=0)
                entry = _Entry(loop, aiohttp.ClientSession(connector=connector))
                self._entries[loop] = entry
                entry.keeper = loop.create_task(self._keep(entry), name="llm-session-keeper")
        return entry.session

    async def _keep(self, entry: _Entry) -> None:
        try:
            await entry.release.wait()
        finally:
            # Reached by a release or by the loop cancelling its tasks as it shuts down.  The
            # entry stays listed until the session is closed, so that release_current() can
            # wait for a close already under way.
            try:
                await entry.session.close()
            finally:
                with self._lock:
                    if self._entries.get(entry.loop) is entry:
                        del self._entries[entry.loop]

    async def release_current(self) -> None:
        """Close the running loop's session, if any, and wait until it is closed."""
        entry = self._entries.get(asyncio.get_running_loop())
        if entry is None:
            return
        entry.release.set()
        if entry.keeper is not None:
            await entry.keeper

    async def aclose(self) -> None:
        """Close every session.  The running loop's is closed before this returns; a session of
        another, still running loop is closed by that loop's keeper shortly after."""
        self.close_elsewhere()
        await self.release_current()

    def close_elsewhere(self) -> None:
        """Mark the pool closed and release every session without waiting: each keeper closes
        its session on its own loop.  Safe from any thread."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
        for entry in entries:
            if not entry.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                    entry.loop.call_soon_threadsafe(entry.release.set)
