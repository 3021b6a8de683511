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


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True):
    """The function a tool call names, with its ``arguments`` as a JSON string (as the model
    wrote it: it may not even be valid JSON, which is for the caller to judge)."""

    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of an assistant message, in the Chat Completions shape."""

    id: str
    function: FunctionCall
    type: str = "function"


class ToolCallDelta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A piece of a streamed tool call, as a Chat Completions chunk carries it: the first
    piece of call ``index`` has its ``id``, ``type`` and ``name``; later ones add
    ``arguments`` fragments."""

    index: int
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: str = ""


#: A stream item: a text delta or a piece of a tool call.
Delta = str | ToolCallDelta


class LLMResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One answer: the assistant message, in the Chat Completions shape.

    ``content`` is None when the model only called tools (or refused: then ``refusal`` holds
    its text).  ``tool_calls`` are in the order the model made them.  ``provider`` is the
    provider that answered (with a fallback chain, not necessarily the first one).
    ``finish_reason`` uses the Chat Completions vocabulary (``stop``, ``length``,
    ``tool_calls``, ``content_filter``); an unknown provider value is passed through.
    ``is_fallback=True`` means no provider answered: ``content`` is the client's fallback text,
    ``provider`` the client's first provider, ``usage`` and ``finish_reason`` None.
    """

    content: str | None
    model: str
    provider: str
    usage: Usage | None = None
    finish_reason: str | None = None
    is_fallback: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None


#: Content part types a message may carry, by role (the wire format decides what it takes:
#: an Anthropic provider refuses audio and files with an error naming the part).
_PART_TYPES: dict[str, frozenset[str]] = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
}


class Message(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One chat message in the Chat Completions form.

    ``content`` is text, or a list of content parts (``text``, ``image_url``, ``input_audio``,
    ``file``) passed through as given; an assistant message may have ``content`` None and
    ``tool_calls``; a ``tool`` message answers one call and names it in ``tool_call_id``.
    Cross-field rules are checked in ``__post_init__`` (msgspec reports them with the path).
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        role = self.role
        if self.content is None and role != "assistant":
            raise ValueError(f"content: required for a {role} message")
        if self.content is None and not (self.tool_calls or self.refusal or self.audio):
            raise ValueError("content: an assistant message needs content or tool_calls")
        if self.tool_calls is not None and role != "assistant":
            raise ValueError(f"tool_calls: only assistant messages have them, not {role}")
        if (self.tool_call_id is None) == (role == "tool"):
            raise ValueError(
                "tool_call_id: required for a tool message"
                if role == "tool"
                else f"tool_call_id: only tool messages have it, not {role}"
            )
        if isinstance(self.content, list):
            allowed = _PART_TYPES[role]
            for index, part in enumerate(self.content):
                kind = part.get("type")
                if kind not in allowed:
                    raise ValueError(
                        f"content[{index}].type: expected one of {sorted(allowed)} in a {role} "
                        f"message, got {kind!r}"
                    )


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

    __slots__ = ("_calls", "finish_reason", "model", "refusal", "usage")

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.refusal: str | None = None
        # index -> [id, name, argument fragments], in the order the calls started
        self._calls: dict[int, tuple[list[str], list[str]]] = {}

    def __repr__(self) -> str:
        return (
            f"<StreamResult model={self.model!r} finish_reason={self.finish_reason!r} "
            f"usage={self.usage!r} tool_calls={len(self._calls)}>"
        )

    def add_tool_call_delta(self, delta: ToolCallDelta) -> None:
        """Assemble tool calls from their deltas (called by the wire decoders)."""
        entry = self._calls.get(delta.index)
        if entry is None:
            entry = self._calls[delta.index] = (["", ""], [])
        head, fragments = entry
        if delta.id:
            head[0] = delta.id
        if delta.name:
            head[1] += delta.name
        if delta.arguments:
            fragments.append(delta.arguments)

    def add_refusal(self, text: str) -> None:
        self.refusal = (self.refusal or "") + text

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls assembled so far, by index."""
        return tuple(
            ToolCall(id=head[0], function=FunctionCall(name=head[1], arguments="".join(parts)))
            for _, (head, parts) in sorted(self._calls.items())
        )
