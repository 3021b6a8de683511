"""What goes in and what comes out, independent of any provider's wire format.

Messages are validated once, here, before anything is sent: a bad list is the caller's fault
(:class:`~service.llm.errors.InvalidRequestError` naming the path of the bad field) and never
reaches a provider or a breaker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from service.llm.errors import InvalidRequestError

# Parameters that the client sets itself: passing them in ``**params`` is a mistake.
_RESERVED_PARAMS = frozenset({"messages", "model", "stream", "stream_options"})


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts, in the Chat Completions vocabulary whatever the provider
    (Anthropic's ``input_tokens`` / ``output_tokens`` become prompt / completion)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class LLMResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One answer.

    ``provider`` is the provider that answered (with a fallback chain, not necessarily the
    first one).  ``finish_reason`` uses the Chat Completions vocabulary (``stop``, ``length``,
    ``tool_calls``, ``content_filter``); an unknown provider value is passed through.
    ``is_fallback=True`` means no provider answered: ``content`` is the client's fallback text,
    ``provider`` the client's first provider, ``usage`` and ``finish_reason`` None.
    """

    content: str
    model: str
    provider: str
    usage: Usage | None = None
    finish_reason: str | None = None
    is_fallback: bool = False


class Message(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One chat message.  ``content`` is text, or a list of content parts passed through
    as given (for providers that accept images and the like)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated request: the messages and the extra body parameters (``temperature``...)."""

    messages: tuple[Message, ...]
    params: dict[str, Any]


def build_request(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *, provider: str
) -> ChatRequest:
    """Validate the caller's ``messages`` and ``params``.

    Raises :class:`InvalidRequestError` (``status`` None) naming the bad field, for example
    ``messages[0].role: Invalid enum value 'bot'``.
    """
    try:
        checked = msgspec.convert(messages, tuple[Message, ...])
    except msgspec.ValidationError as exc:
        path = str(exc).replace("`$", "`messages")
        raise InvalidRequestError(f"invalid messages: {path}", provider=provider) from None
    if not checked:
        raise InvalidRequestError("messages: expected at least one message", provider=provider)
    reserved = sorted(_RESERVED_PARAMS.intersection(params))
    if reserved:
        raise InvalidRequestError(
            f"parameters {reserved} are set by the client (use the model= argument, and "
            "stream_async() to stream)",
            provider=provider,
        )
    return ChatRequest(messages=checked, params=dict(params))


class StreamResult:
    """What a stream learns besides its text, filled in by the wire decoder as events arrive.

    Mutable on purpose: one task (the one iterating the stream) writes it, readers look after
    the stream has ended.
    """

    __slots__ = ("finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def __repr__(self) -> str:
        return (
            f"<StreamResult model={self.model!r} finish_reason={self.finish_reason!r} "
            f"usage={self.usage!r}>"
        )
