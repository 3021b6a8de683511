"""One HTTP transport (``service.llm.transport``) per client per event loop, nothing left open.

A transport (its kept-alive connections) belongs to the loop it was made on, and a client may
be used from several loops over its life (``asyncio.run()`` twice, its own sync facade's loop,
a host application's loop).  So the pool keeps one transport per loop, each with a *keeper*
task on that loop: the keeper waits until the pool closes the transport, or until the loop
cancels it on the way out (``asyncio.run`` cancels every task before it closes the loop), and
closes the transport's connections in both cases, on their own loop, even when a caller
forgets :meth:`SessionPool.aclose`.  (The names say "session" after the aiohttp sessions this
pool held before; ``client.sessions`` is public.)

Alternatives considered: one transport for the client's whole life breaks on the second loop;
a transport per call gives up connection reuse; closing in ``__del__`` runs on the wrong
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from service.llm.transport import Transport


class _Entry:
    __slots__ = ("keeper", "loop", "release", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Transport) -> None:
        self.loop = loop
        self.transport = transport
        self.release = asyncio.Event()
        self.keeper: asyncio.Task[None] | None = None


class SessionPool:
    """Transports of one client, keyed by event loop.  Thread-safe.

    The transports have no connection limit of their own: each provider bounds its connections
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

    def get(self) -> Transport:
        """The running loop's transport, made on first use.  Call from a coroutine.

        Raises ``RuntimeError`` once the pool is closed.
        """
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None:
            return entry.transport
        with self._lock:
            if self._closed:
                raise RuntimeError("the LLM client is closed")
            entry = self._entries.get(loop)
            if entry is None:
                entry = _Entry(loop, Transport())
                self._entries[loop] = entry
                entry.keeper = loop.create_task(self._keep(entry), name="llm-session-keeper")
        return entry.transport

    async def _keep(self, entry: _Entry) -> None:
        try:
            await entry.release.wait()
        finally:
            # Reached by a release or by the loop cancelling its tasks as it shuts down.  The
            # entry stays listed until the transport is closed, so that release_current() can
            # wait for a close already under way.
            try:
                entry.transport.close()
            finally:
                with self._lock:
                    if self._entries.get(entry.loop) is entry:
                        del self._entries[entry.loop]

    async def release_current(self) -> None:
        """Close the running loop's transport, if any, and wait until it is closed."""
        entry = self._entries.get(asyncio.get_running_loop())
        if entry is None:
            return
        entry.release.set()
        if entry.keeper is not None:
            await entry.keeper

    async def aclose(self) -> None:
        """Close every transport.  The running loop's is closed before this returns; one of
        another, still running loop is closed by that loop's keeper shortly after."""
        self.close_elsewhere()
        await self.release_current()

    def close_elsewhere(self) -> None:
        """Mark the pool closed and release every transport without waiting: each keeper closes
        its transport on its own loop.  Safe from any thread."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
        for entry in entries:
            if not entry.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                    entry.loop.call_soon_threadsafe(entry.release.set)
