"""A streamed answer: an async iterator of text deltas that also says who is answering."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType

from service.llm.schema import LLMResponse, StreamResult, Usage


class LLMStream:
    """Text deltas of one answer, from ``client.stream_async(...)``.

    Iterate it with ``async for``.  Nothing is sent before the first iteration; an error (an
    open breaker with ``use_fallback=False``, a provider failure) is raised from the iteration.
    ``provider`` and ``is_fallback`` are set when the first delta arrives; ``model``,
    ``finish_reason`` and ``usage`` once the provider has sent them; ``done`` once the answer
    is complete.  To stop early, leave an ``async with`` block (or call :meth:`aclose`): that
    closes the HTTP response at once instead of whenever the iterator is collected.
    """

    __slots__ = ("_deltas", "_parts", "_result", "done", "is_fallback", "provider")

    def __init__(self) -> None:
        self._deltas: AsyncGenerator[str, None] | None = None
        self._parts: list[str] = []
        self._result = StreamResult()
        self.provider: str | None = None
        self.is_fallback = False
        self.done = False

    def __repr__(self) -> str:
        state = "done" if self.done else "open"
        return (
            f"<LLMStream {state} provider={self.provider!r} fallback={self.is_fallback} "
            f"chars={sum(map(len, self._parts))}>"
        )

    def _attach(self, deltas: AsyncGenerator[str, None]) -> None:
        self._deltas = deltas

    def _answered_by(self, provider: str, result: StreamResult, *, fallback: bool) -> None:
        """Called by the client once a provider (or the fallback text) is answering."""
        self.provider = provider
        self._result = result
        self.is_fallback = fallback

    def _completed(self) -> None:
        """Called by the client after the last delta of a complete answer (not after a
        failure or an early stop, which also end the iteration)."""
        self.done = True

    @property
    def model(self) -> str | None:
        return self._result.model

    @property
    def finish_reason(self) -> str | None:
        return self._result.finish_reason

    @property
    def usage(self) -> Usage | None:
        return self._result.usage

    @property
    def content(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def response(self) -> LLMResponse:
        """The whole answer as an :class:`LLMResponse`; raises ``RuntimeError`` before the end."""
        if not self.done or self.provider is None:
            raise RuntimeError("the stream has not completed")
        return LLMResponse(
            content=self.content,
            model=self.model or "",
            provider=self.provider,
            usage=self.usage,
            finish_reason=self.finish_reason,
            is_fallback=self.is_fallback,
        )

    def __aiter__(self) -> LLMStream:
        return self

    async def __anext__(self) -> str:
        assert self._deltas is not None, "attached by the client"
        delta = await self._deltas.__anext__()
        self._parts.append(delta)
        return delta

    async def aclose(self) -> None:
        """Stop early: close the provider's response (the breaker counts it as ignored)."""
        if self._deltas is not None:
            await self._deltas.aclose()

    async def __aenter__(self) -> LLMStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
