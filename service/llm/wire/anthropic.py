"""The Anthropic Messages wire format.

System messages move to the top-level ``system`` field (the format has no system role);
``max_tokens`` is required by the format, so the provider's default applies when the caller
gives none.  Stop reasons are translated to the Chat Completions vocabulary.  A stream is a
sequence of typed events ended by ``message_stop``.  Answers are decoded leniently, as for
Chat Completions (see ``service.llm.wire.openai``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.llm.errors import ErrorDetail, MalformedResponseError, error_for_type
from service.llm.schema import ChatRequest, LLMResponse, Message, StreamResult, Usage
from service.llm.wire.sse import SSEEvent

API_VERSION = "2023-06-01"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_SYSTEM_ROLES = frozenset({"system", "developer"})

_encoder = msgspec.json.Encoder()


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _Block(msgspec.Struct):
    type: str
    text: str = ""


class _Message(msgspec.Struct):
    content: list[_Block]
    model: str = ""
    stop_reason: str | None = None
    usage: _Usage | None = None


class _Answer(msgspec.Struct):
    # A 2xx body is a message; {"type": "error", "error": {...}} is checked first.
    type: str = "message"
    content: list[_Block] | None = None
    model: str = ""
    stop_reason: str | None = None
    usage: _Usage | None = None
    error: ErrorDetail | None = None


class _EventDelta(msgspec.Struct):
    type: str = ""
    text: str = ""
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str
    message: _Message | None = None
    delta: _EventDelta | None = None
    usage: _Usage | None = None
    error: ErrorDetail | None = None


_answer_decoder = msgspec.json.Decoder(_Answer)
_event_decoder = msgspec.json.Decoder(_Event)


def _usage(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


def _stop_reason(reason: str | None) -> str | None:
    return _STOP_REASONS.get(reason, reason) if reason is not None else None


def _system_blocks(messages: list[Message]) -> str | list[dict[str, Any]]:
    if all(isinstance(message.content, str) for message in messages):
        return "\n\n".join(str(message.content) for message in messages)
    blocks: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message.content, str):
            blocks.append({"type": "text", "text": message.content})
        else:
            blocks.extend(message.content or ())
    return blocks


class AnthropicMessages:
    """The format."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<AnthropicMessages>"

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/v1/messages"

    def headers(self, api_key: str | None, *, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": API_VERSION,
        }
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def body(
        self, request: ChatRequest, model: str, *, stream: bool, default_max_tokens: int
    ) -> bytes:
        system = [message for message in request.messages if message.role in _SYSTEM_ROLES]
        turns = [
            {"role": message.role, "content": message.content}
            for message in request.messages
            if message.role not in _SYSTEM_ROLES
        ]
        body: dict[str, Any] = {"model": model, "max_tokens": default_max_tokens}
        if system:
            body["system"] = _system_blocks(system)
        body["messages"] = turns
        body.update(request.params)
        if stream:
            body["stream"] = True
        return _encoder.encode(body)

    def parse(
        self, body: bytes, request: ChatRequest, *, provider: str, model: str, secret: str | None
    ) -> LLMResponse:
        try:
            answer = _answer_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"invalid Messages answer: {exc}", provider=provider
            ) from None
        if answer.error is not None:
            raise error_for_type(provider, answer.error.type, answer.error.message, secret=secret)
        if answer.content is None:
            raise MalformedResponseError("invalid Messages answer: no content", provider=provider)
        usage = answer.usage
        return LLMResponse(
            content="".join(block.text for block in answer.content if block.type == "text") or None,
            model=answer.model or model,
            provider=provider,
            usage=_usage(usage.input_tokens, usage.output_tokens) if usage is not None else None,
            finish_reason=_stop_reason(answer.stop_reason),
        )

    def decoder(
        self, request: ChatRequest, *, provider: str, secret: str | None, into: StreamResult
    ) -> AnthropicDecoder:
        return AnthropicDecoder(provider, secret, into)


class AnthropicDecoder:
    """Events to deltas: text from ``content_block_delta``, the rest into the result."""

    __slots__ = ("_done", "_input_tokens", "_into", "_provider", "_secret")

    def __init__(self, provider: str, secret: str | None, into: StreamResult) -> None:
        self._provider = provider
        self._secret = secret
        self._into = into
        self._done = False
        self._input_tokens = 0

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> tuple[str, ...]:
        try:
            data = _event_decoder.decode(event.data)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"invalid Messages stream event: {exc}", provider=self._provider
            ) from None
        into = self._into
        match data.type:
            case "content_block_delta":
                delta = data.delta
                if delta is not None and delta.type == "text_delta" and delta.text:
                    return (delta.text,)
            case "message_start" if data.message is not None:
                into.model = data.message.model or None
                if data.message.usage is not None:
                    self._input_tokens = data.message.usage.input_tokens
            case "message_delta":
                if data.delta is not None and data.delta.stop_reason is not None:
                    into.finish_reason = _stop_reason(data.delta.stop_reason)
                if data.usage is not None:
                    into.usage = _usage(self._input_tokens, data.usage.output_tokens)
            case "message_stop":
                self._done = True
            case "error":
                error = data.error or ErrorDetail()
                raise error_for_type(self._provider, error.type, error.message, secret=self._secret)
        # ping, content_block_start/stop, and event types added later carry no text.
        return ()
