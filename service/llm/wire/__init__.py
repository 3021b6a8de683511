"""Wire formats: how a request is written and an answer read, one module per format.

A format knows URLs, headers, bodies, answers and stream events; it knows nothing about
sessions, breakers or fallbacks.  :class:`WireFormat` is what the client needs from one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.llm.schema import ChatRequest, Delta, LLMResponse, StreamResult
from service.llm.wire.sse import SSEEvent

__all__ = ["Delta", "SSEEvent", "StreamDecoder", "WireFormat"]


class StreamDecoder(Protocol):
    """Turns one stream's SSE events into text deltas; one decoder per stream."""

    @property
    def done(self) -> bool:
        """True once the format's end marker arrived (a stream that ends before is cut short)."""
        ...

    def feed(self, event: SSEEvent) -> Sequence[Delta]:
        """The deltas in ``event`` (text, tool-call pieces; often none), in Chat Completions
        order.  Fills the stream's :class:`StreamResult`.

        Raises :class:`~service.llm.errors.MalformedResponseError` for an event that breaks the
        format and the mapped :class:`~service.llm.errors.APIError` for an error event.
        """
        ...


class WireFormat(Protocol):
    """One provider API format (Chat Completions, Anthropic Messages)."""

    def url(self, base_url: str) -> str:
        """The endpoint for ``base_url`` (as configured, with or without a trailing slash)."""
        ...

    def headers(self, api_key: str | None, *, stream: bool) -> dict[str, str]:
        """Request headers, including the credentials when there is a key."""
        ...

    def body(
        self, request: ChatRequest, model: str, *, stream: bool, default_max_tokens: int
    ) -> bytes:
        """The JSON request body.  ``default_max_tokens`` applies only where the format
        requires a limit and the caller gave none."""
        ...

    def parse(
        self, body: bytes, request: ChatRequest, *, provider: str, model: str, secret: str | None
    ) -> LLMResponse:
        """The answer in a 2xx body to ``request``.  ``model`` stands in when the answer names
        none.

        Raises :class:`~service.llm.errors.MalformedResponseError`, or the mapped error when
        the body is an error object despite the 2xx status.
        """
        ...

    def decoder(
        self, request: ChatRequest, *, provider: str, secret: str | None, into: StreamResult
    ) -> StreamDecoder:
        """A decoder for one streamed answer to ``request``, writing what it learns into
        ``into``."""
        ...
