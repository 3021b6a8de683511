"""One HTTP exchange with one provider: send, read, translate every fault into an APIError.

This is the function the breaker guards.  It raises only :class:`APIError` subclasses (and
cancellation), so that the breaker's policy sees exactly the error classes of
``service.llm.errors``; it knows nothing about breakers or fallbacks itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator

import aiohttp

from service.llm.errors import (
    TRANSPORT_ERRORS,
    MalformedResponseError,
    error_for_status,
    error_for_transport,
)
from service.llm.schema import ChatRequest, LLMResponse, StreamResult
from service.llm.settings import ProviderSettings
from service.llm.wire.sse import iter_sse

logger = logging.getLogger("service.llm")


class Provider:
    """Calls one configured provider over a session the caller owns."""

    __slots__ = ("settings",)

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        settings = self.settings
        return f"<Provider {settings.name!r} {settings.kind} model={settings.model!r}>"

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def _secret(self) -> str | None:
        key = self.settings.api_key
        return key.reveal() if key is not None else None

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
        settings = self.settings
        wire = settings.wire
        total = timeout if timeout is not None else settings.timeout
        client_timeout = aiohttp.ClientTimeout(
            total=total, connect=min(settings.connect_timeout, total)
        )
        url = wire.url(_base(settings))
        body = wire.body(request, model, stream=False, default_max_tokens=settings.max_tokens)
        try:
            async with session.post(
                url,
                data=body,
                headers=wire.headers(self._secret, stream=False),
                timeout=client_timeout,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                status, headers = response.status, response.headers
        except TRANSPORT_ERRORS as exc:
            raise error_for_transport(self.name, exc) from exc
        logger.debug("%s: POST %s -> %d (%d bytes)", self.name, url, status, len(payload))
        if not 200 <= status <= 299:
            raise error_for_status(
                self.name, status, headers, payload, secret=self._secret, now=time.time()
            )
        return wire.parse(payload, provider=self.name, model=model, secret=self._secret)

    async def stream(
        self,
        session: aiohttp.ClientSession,
        request: ChatRequest,
        model: str,
        timeout: float | None,
        into: StreamResult,
    ) -> AsyncGenerator[str, None]:
        """Text deltas of one streamed answer; fills ``into`` as events arrive.

        ``timeout`` bounds each read (a stream may take longer than any total).  A stream that
        ends before the format's end marker raises :class:`MalformedResponseError`, one cut
        by the network :class:`NetworkTimeoutError`: either way it did not complete.
        """
        settings = self.settings
        wire = settings.wire
        read = timeout if timeout is not None else settings.timeout
        client_timeout = aiohttp.ClientTimeout(
            total=None, connect=min(settings.connect_timeout, read), sock_read=read
        )
        url = wire.url(_base(settings))
        body = wire.body(request, model, stream=True, default_max_tokens=settings.max_tokens)
        decoder = wire.decoder(provider=self.name, secret=self._secret, into=into)
        try:
            async with session.post(
                url,
                data=body,
                headers=wire.headers(self._secret, stream=True),
                timeout=client_timeout,
                allow_redirects=False,
            ) as response:
                logger.debug("%s: POST %s -> %d (stream)", self.name, url, response.status)
                if not 200 <= response.status <= 299:
                    payload = await response.read()
                    raise error_for_status(
                        self.name,
                        response.status,
                        response.headers,
                        payload,
                        secret=self._secret,
                        now=time.time(),
                    )
                try:
                    async for event in iter_sse(response.content):
                        delta = decoder.feed(event)
                        if delta is not None:
                            yield delta
                        if decoder.done:
                            break
                except ValueError as exc:  # not UTF-8, or a line beyond aiohttp's limit
                    raise MalformedResponseError(
                        f"unreadable stream ({type(exc).__name__})", provider=self.name
                    ) from exc
        except TRANSPORT_ERRORS as exc:
            raise error_for_transport(self.name, exc) from exc
        if not decoder.done:
            raise MalformedResponseError(
                "the stream ended before its end marker", provider=self.name
            )
        if into.model is None:
            into.model = model


def _base(settings: ProviderSettings) -> str:
    # ProviderSettings.check() has run: a callable provider has a base URL.
    assert settings.base_url is not None
    return settings.base_url
