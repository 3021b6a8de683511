"""One HTTP exchange with one provider: send, read, translate every fault into an APIError.

This is what the breaker guards.  It raises only :class:`APIError` subclasses (and
cancellation), so that the breaker's policy sees exactly the error classes of
``service.llm.errors``; it knows nothing about breakers or fallbacks itself.

Two levels: :meth:`Provider.post` / :meth:`Provider.read` / :meth:`Provider.events` move bytes
and SSE events (the gateway forwards those as they are), and :meth:`Provider.complete` /
:meth:`Provider.stream` speak in :class:`ChatRequest` and :class:`LLMResponse` through the
provider's wire format (the library).

Connection slots: a provider has ``pool_size`` of them per event loop, and a call waits at
most ``pool_timeout`` for one (:meth:`Provider.slot`).  The wait happens before the breaker
admits the call and before the request's own timeout starts, so a busy local pool is never
blamed on the provider (issue 13 #1).  aiohttp's connector is unlimited: its limit would be a
second, untimed queue inside the request's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import aiohttp

from service.llm.errors import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderSaturatedError,
    error_for_status,
    error_for_transport,
)
from service.llm.schema import ChatRequest, Delta, LLMResponse, StreamResult
from service.llm.settings import ProviderSettings
from service.llm.wire.sse import SSEEvent, iter_sse

logger = logging.getLogger("service.llm")


class Provider:
    """Calls one configured provider over a session the caller owns."""

    __slots__ = ("_read_timeout", "_slots", "_total_timeout", "settings")

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        # Built once: a ClientTimeout per request is measurable on the gateway's hot path.
        self._total_timeout = self._timeout(None, stream=False)
        self._read_timeout = self._timeout(None, stream=True)

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

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of this provider's connection slots on the running loop.

        Raises :class:`ProviderSaturatedError` when none frees up within ``pool_timeout``.
        """
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.settings.pool_size)
        if slots.locked():
            try:
                async with asyncio.timeout(self.settings.pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise ProviderSaturatedError(
                    f"all {self.settings.pool_size} connection slots stayed busy for "
                    f"{self.settings.pool_timeout:g}s (pool_size, pool_timeout)",
                    provider=self.name,
                ) from None
        else:
            await slots.acquire()  # free: returns at once
        try:
            yield
        finally:
            slots.release()

    def saturation(self) -> tuple[int, int]:
        """(slots in use, pool size) on the running loop."""
        slots = self._slots.get(asyncio.get_running_loop())
        size = self.settings.pool_size
        return (size - slots._value if slots is not None else 0), size

    # -- bytes -------------------------------------------------------------------------------

    def _timeout(self, timeout: float | None, *, stream: bool) -> aiohttp.ClientTimeout:
        settings = self.settings
        limit = timeout if timeout is not None else settings.timeout
        connect = min(settings.connect_timeout, limit)
        if stream:  # a stream may take longer than any total: bound each read instead
            return aiohttp.ClientTimeout(total=None, connect=connect, sock_read=limit)
        return aiohttp.ClientTimeout(total=limit, connect=connect)

    @property
    def base_url(self) -> str:
        # ProviderSettings.check() has run: a callable provider has a base URL.
        assert self.settings.base_url is not None
        return self.settings.base_url

    async def post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout: float | None,
    ) -> aiohttp.ClientResponse:
        """Send ``body``; return the open 2xx response (the caller reads and releases it).

        Raises the mapped :class:`APIError` for an error status (its ``upstream_body`` holds
        the provider's answer, key redacted) and for every transport fault.
        """
        if timeout is None:
            client_timeout = self._read_timeout if stream else self._total_timeout
        else:
            client_timeout = self._timeout(timeout, stream=stream)
        try:
            response = await session.post(
                url, data=body, headers=headers, timeout=client_timeout, allow_redirects=False
            )
            status = response.status
            if 200 <= status <= 299:
                return response
            try:
                payload = await response.read()
            finally:
                response.release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc
        logger.debug("%s: POST %s -> %d (%d bytes)", self.name, url, status, len(payload))
        raise error_for_status(
            self.name, status, response.headers, payload, secret=self.secret, now=time.time()
        )

    async def read(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> tuple[bytes, Mapping[str, str]]:
        """One whole 2xx answer: its body and headers (see :meth:`post` for errors)."""
        response = await self.post(session, url, body, headers, stream=False, timeout=timeout)
        try:
            payload = await response.read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc
        finally:
            response.release()
        return payload, response.headers

    async def events(self, response: aiohttp.ClientResponse) -> AsyncGenerator[SSEEvent, None]:
        """The SSE events of a streamed 2xx answer, then the rest of the body read to its end.

        Reading past the end marker is what lets aiohttp put the connection back in the pool
        (stopping at ``[DONE]`` closed it: one new connection, and TLS handshake, per stream).
        The consumer stops iterating at the format's end marker and closes the generator; the
        drain happens then, in ``finally``, bounded by the read timeout.
        """
        content = response.content
        try:
            async for event in iter_sse(content):
                yield event
        except ValueError as exc:  # not UTF-8, or a line beyond aiohttp's limit
            raise MalformedResponseError(
                f"unreadable stream ({type(exc).__name__})", provider=self.name
            ) from exc
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise error_for_transport(self.name, exc, secret=self.secret) from exc
        finally:
            await drain(response)

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
        session: aiohttp.ClientSession,
        request: ChatRequest,
        model: str,
        timeout: float | None,
    ) -> LLMResponse:
        """One answer.  ``timeout`` (seconds for the whole exchange) overrides the provider's.

        Raises the mapped :class:`APIError` for every fault; nothing else except cancellation.
        """
        wire = self.settings.wire
        body = self._body(request, model, stream=False)
        payload, _ = await self.read(
            session, wire.url(self.base_url), body, wire.headers(self.secret, stream=False), timeout
        )
        return wire.parse(payload, request, provider=self.name, model=model, secret=self.secret)

    async def stream(
        self,
        session: aiohttp.ClientSession,
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
        response = await self.post(
            session,
            wire.url(self.base_url),
            body,
            wire.headers(self.secret, stream=True),
            stream=True,
            timeout=timeout,
        )
        try:
            async with contextlib.aclosing(self.events(response)) as events:
                async for event in events:
                    for delta in decoder.feed(event):
                        yield delta
                    if decoder.done:
                        break
        finally:
            response.release()
        if not decoder.done:
            raise MalformedResponseError(
                "the stream ended before its end marker", provider=self.name
            )
        if into.model is None:
            into.model = model


async def drain(response: aiohttp.ClientResponse) -> None:
    """Read what is left of a response so that its connection can be reused; a failure only
    means the connection is closed instead."""
    if response.content.at_eof():
        return
    try:
        await response.content.read()
    except asyncio.CancelledError:
        raise
    except Exception:
        response.close()
