"""A streamed answer: an async iterator of deltas that also says who is answering."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType

from service.llm.schema import Delta, LLMResponse, StreamResult, ToolCall, Usage


class LLMStream:
    """The deltas of one answer, from ``client.stream_async(...)``: text as ``str``, and
    :class:`~service.llm.schema.ToolCallDelta` pieces when the model calls tools.

    Iterate it with ``async for``.  Nothing is sent before the first iteration; an error (an
    open breaker with ``use_fallback=False``, a provider failure) is raised from the iteration.
    ``provider`` and ``is_fallback`` are set when the first delta arrives; ``model``,
    ``finish_reason`` and ``usage`` once the provider has sent them; ``tool_calls`` (assembled)
    and ``refusal`` as they arrive; ``done`` once the answer is complete.  To stop early,
    leave an ``async with`` block (or call :meth:`aclose`): that closes the HTTP response at
    once instead of whenever the iterator is collected.
    """

    __slots__ = ("_deltas", "_parts", "_result", "done", "is_fallback", "provider")

    def __init__(self) -> None:
        self._deltas: AsyncGenerator[Delta, None] | None = None
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

    def _attach(self, deltas: AsyncGenerator[Delta, None]) -> None:
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
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls received so far, assembled from their deltas."""
        return self._result.tool_calls

    @property
    def refusal(self) -> str | None:
        return self._result.refusal

    @property
    def content(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def response(self) -> LLMResponse:
        """The whole answer as an :class:`LLMResponse`; raises ``RuntimeError`` before the end."""
        if not self.done or self.provider is None:
            raise RuntimeError("the stream has not completed")
        tool_calls = self.tool_calls
        return LLMResponse(
            content=self.content if self._parts or not (tool_calls or self.refusal) else None,
            model=self.model or "",
            provider=self.provider,
            usage=self.usage,
            finish_reason=self.finish_reason,
            is_fallback=self.is_fallback,
            tool_calls=tool_calls,
            refusal=self.refusal,
        )

    def __aiter__(self) -> LLMStream:
        return self

    async def __anext__(self) -> Delta:
        assert self._deltas is not None, "attached by the client"
        delta = await self._deltas.__anext__()
        if isinstance(delta, str):
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
