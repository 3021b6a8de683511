"""The Chat Completions wire format (OpenAI, and any server that speaks it: vLLM, Ollama...).

Answers are decoded leniently (unknown fields are ignored): providers add fields all the time,
and refusing an answer for a new field would turn their change into our outage.  Missing
required fields, wrong types and invalid JSON are :class:`MalformedResponseError`.
A stream is ``data: {chunk}`` events ended by ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from service.llm.errors import ErrorDetail, MalformedResponseError, error_for_type
from service.llm.schema import (
    ChatRequest,
    Delta,
    FunctionCall,
    LLMResponse,
    StreamResult,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from service.llm.wire.sse import SSEEvent

NO_DELTAS: tuple[Delta, ...] = ()

_encoder = msgspec.json.Encoder()


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def normalized(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens or self.prompt_tokens + self.completion_tokens,
        )


class _Function(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class _ToolCall(msgspec.Struct):
    function: _Function
    id: str = ""
    type: str = "function"


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    index: int = 0
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    model: str = ""
    usage: _Usage | None = None
    error: ErrorDetail | None = None


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    model: str = ""
    usage: _Usage | None = None
    error: ErrorDetail | None = None


_completion_decoder = msgspec.json.Decoder(_Completion)
_chunk_decoder = msgspec.json.Decoder(_Chunk)


class ChatCompletions:
    """The format.  ``include_usage`` asks for token counts in streams (OpenAI supports it;
    some compatible servers reject the parameter, so it is off for them)."""

    __slots__ = ("include_usage",)

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage

    def __repr__(self) -> str:
        return f"<ChatCompletions include_usage={self.include_usage}>"

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/chat/completions"

    def headers(self, api_key: str | None, *, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def body(
        self, request: ChatRequest, model: str, *, stream: bool, default_max_tokens: int
    ) -> bytes:
        # Chat Completions has its own default output limit: default_max_tokens is not sent.
        body = {"model": model, "messages": request.messages, **request.params}
        if stream:
            body["stream"] = True
            if self.include_usage:
                body["stream_options"] = {"include_usage": True}
        return _encoder.encode(body)

    def parse(
        self, body: bytes, request: ChatRequest, *, provider: str, model: str, secret: str | None
    ) -> LLMResponse:
        try:
            answer = _completion_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"invalid Chat Completions answer: {exc}", provider=provider
            ) from None
        return response_of(answer, provider=provider, model=model, secret=secret)

    def decoder(
        self, request: ChatRequest, *, provider: str, secret: str | None, into: StreamResult
    ) -> ChatCompletionsDecoder:
        return ChatCompletionsDecoder(provider, secret, into)


def response_from_dict(
    data: dict[str, Any], *, provider: str, model: str, secret: str | None
) -> LLMResponse:
    """The answer in a Chat Completions answer already decoded (a translated one)."""
    try:
        answer = msgspec.convert(data, _Completion)
    except msgspec.ValidationError as exc:
        raise MalformedResponseError(
            f"invalid Chat Completions answer: {exc}", provider=provider
        ) from None
    return response_of(answer, provider=provider, model=model, secret=secret)


def response_of(
    answer: _Completion, *, provider: str, model: str, secret: str | None
) -> LLMResponse:
    if answer.error is not None:
        raise error_for_type(provider, answer.error.type, answer.error.message, secret=secret)
    choice = next((choice for choice in answer.choices if choice.index == 0), None)
    if choice is None:
        raise MalformedResponseError(
            "invalid Chat Completions answer: no choices", provider=provider
        )
    message = choice.message
    return LLMResponse(
        content=message.content,
        model=answer.model or model,
        provider=provider,
        usage=answer.usage.normalized() if answer.usage is not None else None,
        finish_reason=choice.finish_reason,
        tool_calls=tuple(
            ToolCall(
                id=call.id,
                type=call.type,
                function=FunctionCall(name=call.function.name, arguments=call.function.arguments),
            )
            for call in message.tool_calls or ()
        ),
        refusal=message.refusal,
    )


class ChatCompletionsDecoder:
    """Chunks to deltas.  Only choice 0 is followed (the client asks for one choice)."""

    __slots__ = ("_done", "_into", "_provider", "_secret")

    def __init__(self, provider: str, secret: str | None, into: StreamResult) -> None:
        self._provider = provider
        self._secret = secret
        self._into = into
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> Sequence[Delta]:
        if event.data == "[DONE]":
            self._done = True
            return NO_DELTAS
        try:
            chunk = _chunk_decoder.decode(event.data)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"invalid Chat Completions stream chunk: {exc}", provider=self._provider
            ) from None
        return self.feed_chunk(chunk)

    def feed_dict(self, chunk: dict[str, Any]) -> Sequence[Delta]:
        """A chunk already decoded (from a translated stream)."""
        try:
            decoded = msgspec.convert(chunk, _Chunk)
        except msgspec.ValidationError as exc:
            raise MalformedResponseError(
                f"invalid Chat Completions stream chunk: {exc}", provider=self._provider
            ) from None
        return self.feed_chunk(decoded)

    def feed_chunk(self, chunk: _Chunk) -> Sequence[Delta]:
        if chunk.error is not None:
            raise error_for_type(
                self._provider, chunk.error.type, chunk.error.message, secret=self._secret
            )
        into = self._into
        if chunk.model:
            into.model = chunk.model
        if chunk.usage is not None:
            into.usage = chunk.usage.normalized()
        deltas: Sequence[Delta] = NO_DELTAS
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            if choice.finish_reason:
                into.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.refusal:
                into.add_refusal(delta.refusal)
            if delta.tool_calls:
                found: list[Delta] = [delta.content] if delta.content else []
                for call in delta.tool_calls:
                    function = call.function or _FunctionDelta()
                    piece = ToolCallDelta(
                        index=call.index,
                        id=call.id,
                        type=call.type,
                        name=function.name,
                        arguments=function.arguments or "",
                    )
                    into.add_tool_call_delta(piece)
                    found.append(piece)
                deltas = found
            elif delta.content:
                deltas = (delta.content,)
        return deltas
