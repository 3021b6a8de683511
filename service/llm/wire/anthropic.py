"""The Anthropic Messages wire format, spoken through ``service.llm.translate``.

The library speaks Chat Completions (messages, tools, ``response_format``, answers, stream
chunks); for an Anthropic provider each request is translated with
:func:`~service.llm.translate.chat_request_to_messages` (a field with no counterpart is an
:class:`InvalidRequestError` naming it, never dropped), each answer with
:func:`~service.llm.translate.messages_response_to_chat` and each stream event with
:class:`~service.llm.translate.MessagesStreamToChat`, and the Chat Completions decoding does
the rest: one set of rules in one place for the library and the gateway alike.  ``max_tokens``
is required by the format, so the provider's default applies when the caller gives none.
A stream is a sequence of typed events ended by ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from service.llm.errors import (
    InvalidRequestError,
    MalformedResponseError,
    error_for_type,
)
from service.llm.schema import ChatRequest, Delta, LLMResponse, StreamResult
from service.llm.translate import (
    MessagesStreamToChat,
    UntranslatableError,
    chat_request_to_messages,
    messages_response_to_chat,
    structured_output_requested,
)
from service.llm.wire.openai import ChatCompletionsDecoder, response_from_dict
from service.llm.wire.sse import SSEEvent

API_VERSION = "2023-06-01"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])

#: What a translator raises on an answer that breaks its format (a missing key, a wrong type,
#: an UntranslatableError): the provider's fault, a MalformedResponseError.
SHAPE_ERRORS: tuple[type[Exception], ...] = (KeyError, TypeError, ValueError, AttributeError)


def chat_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The request as a Chat Completions body (what the translation reads)."""
    body: dict[str, Any] = {
        "messages": [msgspec.to_builtins(message) for message in request.messages],
        **request.params,
    }
    if stream:
        body["stream"] = True
    return body


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
        """Raises :class:`InvalidRequestError` (``status`` None; ``provider`` empty: the
        provider fills it in) naming a field that has no Anthropic counterpart."""
        try:
            body = chat_request_to_messages(
                chat_body(request, stream=stream),
                model=model,
                default_max_tokens=default_max_tokens,
            )
        except UntranslatableError as exc:
            raise InvalidRequestError(
                f"{exc.field}: cannot be sent to an Anthropic provider ({exc.reason})",
                provider="",
            ) from None
        return _encoder.encode(body)

    def parse(
        self, body: bytes, request: ChatRequest, *, provider: str, model: str, secret: str | None
    ) -> LLMResponse:
        try:
            answer = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"invalid Messages answer: {exc}", provider=provider
            ) from None
        if answer.get("type") == "error":
            error = answer.get("error")
            error = error if isinstance(error, dict) else {}
            raise error_for_type(
                provider, error.get("type"), str(error.get("message") or ""), secret=secret
            )
        try:
            chat = messages_response_to_chat(
                answer,
                model=answer.get("model") or model,
                structured=structured_output_requested(request.params),
            )
        except SHAPE_ERRORS as exc:  # UntranslatableError is a ValueError
            raise MalformedResponseError(
                f"invalid Messages answer: {exc}", provider=provider
            ) from None
        return response_from_dict(chat, provider=provider, model=model, secret=secret)

    def decoder(
        self, request: ChatRequest, *, provider: str, secret: str | None, into: StreamResult
    ) -> AnthropicDecoder:
        return AnthropicDecoder(request, provider, secret, into)


class AnthropicDecoder:
    """Events to deltas: each event translated to Chat chunks, each chunk decoded as in a
    Chat Completions stream (so text, tool-call deltas and usage come out the same way)."""

    __slots__ = ("_chat", "_into", "_provider", "_translate")

    def __init__(
        self, request: ChatRequest, provider: str, secret: str | None, into: StreamResult
    ) -> None:
        self._provider = provider
        self._into = into
        self._chat = ChatCompletionsDecoder(provider, secret, into)
        self._translate = MessagesStreamToChat(
            model="",
            completion_id="",
            created=0,
            include_usage=True,
            structured=structured_output_requested(request.params),
        )

    @property
    def done(self) -> bool:
        return self._translate.done

    def feed(self, event: SSEEvent) -> Sequence[Delta]:
        try:
            data = _decoder.decode(event.data)
            chunks = self._translate.feed(event.event or str(data.get("type", "")), data)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"invalid Messages stream event: {exc}", provider=self._provider
            ) from None
        except SHAPE_ERRORS as exc:
            raise MalformedResponseError(
                f"invalid Messages stream event: {exc!r}", provider=self._provider
            ) from None
        deltas: list[Delta] = []
        for chunk in chunks:
            if chunk.get("model") == "":
                del chunk["model"]  # the translator's placeholder; message_start names it
            deltas.extend(self._chat.feed_dict(chunk))
        if data.get("type") == "message_start":
            model = (data.get("message") or {}).get("model")
            if model:
                self._into.model = model
        return deltas
