"""One HTTP exchange with one provider: send, read, translate every fault into an APIError.

This is what the breaker guards.  It raises only :class:`APIError` subclasses (and
cancellation), so that the breaker's policy sees exactly the error classes of
``service.llm.errors``; it knows nothing about breakers or fallbacks itself.

Two levels: :meth:`Provider.fetch`, :meth:`Provider.open`, :meth:`Provider.chunks` and
:meth:`Provider.events` move bytes and SSE events (the gateway forwards those as they are),
and :meth:`Provider.complete` / :meth:`Provider.stream` speak in :class:`ChatRequest` and
:class:`LLMResponse` through the provider's wire format (the library).

Connection slots: a provider has ``pool_size`` of them per event loop (shared by the clients of
one actor system that call it: :func:`shared_slots`), and a call waits at
most ``pool_timeout`` for one (:meth:`Provider.slot`).  The wait happens before the breaker
admits the call and before the request's own timeout starts, so a busy local pool is never
blamed on the provider (issue 13 #1).  The transport (``service.llm.transport``) has no limit
of its own: one would be a second, untimed queue inside the request's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Mapping

from service.llm.errors import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderSaturatedError,
    error_for_status,
    error_for_transport,
)
from service.llm.schema import ChatRequest, Delta, LLMResponse, StreamResult
from service.llm.settings import ProviderSettings
from service.llm.transport import Stream, Transport
from service.llm.wire.sse import SSEEvent, iter_sse

logger = logging.getLogger("service.llm")


#: A provider's connection slots: one semaphore of ``pool_size`` per event loop.
SlotTable = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]

_shared_slots: weakref.WeakKeyDictionary[object, dict[tuple[str, int], SlotTable]] = (
    weakref.WeakKeyDictionary()
)


def shared_slots(owner: object, name: str, pool_size: int) -> SlotTable:
    """The slot table of provider ``name`` under ``owner`` (an actor system, like the breakers
    and cooldowns): every client of that provider with the same ``pool_size`` shares it, so
    that ``pool_size`` bounds the provider's connections rather than one client's (the gateway
    makes one client per route, and routes share providers).  A client asking for another
    ``pool_size`` keeps a table of its own: two clients cannot both have their way."""
    tables = _shared_slots.get(owner)
    if tables is None:
        tables = _shared_slots[owner] = {}
    table = tables.get((name, pool_size))
    if table is None:
        table = tables[(name, pool_size)] = weakref.WeakKeyDictionary()
    return table


class Provider:
    """Calls one configured provider over a transport the caller owns."""

    __slots__ = ("_slots", "settings")

    def __init__(self, settings: ProviderSettings, slots: SlotTable | None = None) -> None:
        """``slots``: the table to share with other clients of this provider (see
        :func:`shared_slots`); by default this provider's own."""
        self.settings = settings
        self._slots: SlotTable = slots if slots is not None else weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        settings = self.settings
        return f"<Provider {settings.name!r} {settings.kind} model={settings.model!r}>"

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def secret(self) -> str | None:
        """The API key (for the request header and for redaction only)."""
        key = self.settings.api_key
        return key.reveal() if key is not None else None

    # -- connection slots --------------------------------------------------------------------

    def slot(self) -> _Slot:
        """``async with provider.slot():`` holds one of this provider's connection slots on the
        running loop.  Raises :class:`ProviderSaturatedError` when none frees up within
        ``pool_timeout``."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.settings.pool_size)
        return _Slot(self, slots)

    def saturation(self) -> tuple[int, int]:
        """(slots in use, pool size) on the running loop."""
        slots = self._slots.get(asyncio.get_running_loop())
        size = self.settings.pool_size
        return (size - slots._value if slots is not None else 0), size

    # -- bytes -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        # ProviderSettings.check() has run: a callable provider has a base URL.
        assert self.settings.base_url is not None
        return self.settings.base_url

    def _limits(self, timeout: float | None) -> tuple[float, float]:
        """(the exchange's timeout, the connect timeout within it)."""
        limit = timeout if timeout is not None else self.settings.timeout
        return limit, min(self.settings.connect_timeout, limit)

    async def fetch(
        self,
        transport: Transport,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> tuple[bytes, Mapping[str, str]]:
        """POST ``body``; the whole 2xx answer's body and headers.  ``timeout`` (seconds for
        the whole exchange) overrides the provider's.

        Raises the mapped :class:`APIError` for an error status (its ``upstream_body`` holds
        the provider's answer, key redacted) and for every transport fault.
        """
        limit, connect = self._limits(timeout)
        try:
            answer = await transport.fetch(
                url, headers, body, timeout=limit, connect_timeout=connect
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc
        if 200 <= answer.status <= 299:
            return answer.body, answer.headers
        raise self._status_error(url, answer.status, answer.headers, answer.body)

    async def open(
        self,
        transport: Transport,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> Stream:
        """POST a streaming request; the open 2xx answer (the caller releases it).
        ``timeout`` bounds the wait for the answer's head and each read after it (a stream
        may take longer than any total).  Errors as for :meth:`fetch`."""
        limit, connect = self._limits(timeout)
        try:
            stream = await transport.open(
                url, headers, body, read_timeout=limit, connect_timeout=connect
            )
            if 200 <= stream.status <= 299:
                return stream
            try:
                payload = await stream.read(limit)
            finally:
                stream.release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc
        raise self._status_error(url, stream.status, stream.headers, payload)

    def _status_error(
        self, url: str, status: int, headers: Mapping[str, str], payload: bytes
    ) -> Exception:
        logger.debug("%s: POST %s -> %d (%d bytes)", self.name, url, status, len(payload))
        return error_for_status(
            self.name, status, headers, payload, secret=self.secret, now=time.time()
        )

    def read_timeout(self, timeout: float | None) -> float:
        """The bound on each read of a stream."""
        return self._limits(timeout)[0]

    async def chunks(self, stream: Stream, timeout: float | None) -> AsyncGenerator[bytes, None]:
        """A streamed 2xx answer's body as it arrives, transport faults mapped (see
        :meth:`fetch`).  Releases nothing: the caller does."""
        try:
            async for chunk in stream.chunks(self.read_timeout(timeout)):
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc

    async def events(
        self, stream: Stream, timeout: float | None = None
    ) -> AsyncGenerator[SSEEvent, None]:
        """The SSE events of a streamed 2xx answer, then the rest of the body read to its end.

        Reading past the end marker is what puts the connection back in the pool (stopping at
        ``[DONE]`` closed it: one new connection, and TLS handshake, per stream).  The
        consumer stops iterating at the format's end marker and closes the generator; the
        drain happens then, in ``finally``, bounded by the read timeout.
        """
        read_timeout = self.read_timeout(timeout)
        try:
            async for event in iter_sse(stream.lines(read_timeout)):
                yield event
        except ValueError as exc:  # not UTF-8, or a line beyond the transport's limit
            raise MalformedResponseError(
                f"unreadable stream ({type(exc).__name__})", provider=self.name
            ) from exc
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc
        finally:
            await drain(stream, read_timeout)

    # -- the library: requests and answers in a wire format ------------------------------------

    def _body(self, request: ChatRequest, model: str, *, stream: bool) -> bytes:
        settings = self.settings
        try:
            return settings.wire.body(
                request, model, stream=stream, default_max_tokens=settings.max_tokens
            )
        except InvalidRequestError as exc:  # a field the format cannot express
            exc.provider = self.name
            raise

    async def complete(
        self,
        transport: Transport,
        request: ChatRequest,
        model: str,
        timeout: float | None,
    ) -> LLMResponse:
        """One answer.  ``timeout`` (seconds for the whole exchange) overrides the provider's.

        Raises the mapped :class:`APIError` for every fault; nothing else except cancellation.
        """
        wire = self.settings.wire
        body = self._body(request, model, stream=False)
        headers = wire.headers(self.secret, stream=False)
        payload, _ = await self.fetch(transport, wire.url(self.base_url), body, headers, timeout)
        return wire.parse(payload, request, provider=self.name, model=model, secret=self.secret)

    async def stream(
        self,
        transport: Transport,
        request: ChatRequest,
        model: str,
        timeout: float | None,
        into: StreamResult,
    ) -> AsyncGenerator[Delta, None]:
        """The deltas (text, tool-call pieces) of one streamed answer; fills ``into``.

        ``timeout`` bounds each read (a stream may take longer than any total).  A stream that
        ends before the format's end marker raises :class:`MalformedResponseError`, one cut
        by the network :class:`NetworkTimeoutError`: either way it did not complete.
        """
        wire = self.settings.wire
        body = self._body(request, model, stream=True)
        decoder = wire.decoder(request, provider=self.name, secret=self.secret, into=into)
        headers = wire.headers(self.secret, stream=True)
        stream = await self.open(transport, wire.url(self.base_url), body, headers, timeout)
        try:
            async with contextlib.aclosing(self.events(stream, timeout)) as events:
                async for event in events:
                    for delta in decoder.feed(event):
                        yield delta
                    if decoder.done:
                        break
        finally:
            stream.release()
        if not decoder.done:
            raise MalformedResponseError(
                "the stream ended before its end marker", provider=self.name
            )
        if into.model is None:
            into.model = model


class _Slot:
    """One connection slot, held for an ``async with`` block (a class rather than an
    ``asynccontextmanager``: it is entered once per provider call)."""

    __slots__ = ("_provider", "_slots")

    def __init__(self, provider: Provider, slots: asyncio.Semaphore) -> None:
        self._provider = provider
        self._slots = slots

    async def __aenter__(self) -> None:
        slots = self._slots
        if not slots.locked():
            await slots.acquire()  # free: returns at once
            return
        settings = self._provider.settings
        try:
            async with asyncio.timeout(settings.pool_timeout):
                await slots.acquire()
        except TimeoutError:
            raise ProviderSaturatedError(
                f"all {settings.pool_size} connection slots stayed busy for "
                f"{settings.pool_timeout:g}s (pool_size, pool_timeout)",
                provider=settings.name,
            ) from None

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release()


async def drain(stream: Stream, read_timeout: float) -> None:
    """Read what is left of a streamed answer so that its connection can be reused; a
    failure only means the connection is closed instead (on release)."""
    if stream.at_eof:
        return
    try:
        await stream.read(read_timeout)
    except asyncio.CancelledError:
        raise
    except Exception:
        stream.close()
