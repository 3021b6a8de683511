"""The Anthropic side of the simulator: Messages (and count_tokens), read and written.

Checked where a translation into this format tends to go wrong: roles are only ``user`` and
``assistant`` (the system prompt is a top-level field), ``max_tokens`` is required, content
block types are Anthropic's, and a ``tool_result`` must answer a ``tool_use`` of the assistant
turn just before it.  Errors name the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from service.simulator.answers import Answer, Ask, Tool, count_words, deltas, fragments, next_id
from service.simulator.errors import BadRequest

_encoder = msgspec.json.Encoder()


class _Message(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class _Tool(msgspec.Struct, frozen=True):
    name: str
    input_schema: dict[str, Any] = {}
    description: str | None = None
    type: str | None = None


class _ToolChoice(msgspec.Struct, frozen=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class CountTokensBody(msgspec.Struct, frozen=True, kw_only=True):
    """What ``/v1/messages/count_tokens`` reads (``max_tokens`` is not needed there)."""

    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    model: str = "simulated-model"
    system: str | list[dict[str, Any]] | None = None
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None


class MessagesBody(CountTokensBody, frozen=True, kw_only=True):
    """The Messages fields the simulator reads (others are accepted and ignored)."""

    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    stream: bool = False
    stop_sequences: list[str] | None = None


_TOOL_MODES: dict[str, Literal["auto", "none", "required"]] = {
    "auto": "auto",
    "none": "none",
    "any": "required",
    "tool": "required",
}
_decoder = msgspec.json.Decoder(MessagesBody)
_count_decoder = msgspec.json.Decoder(CountTokensBody)
_BLOCK_TYPES = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)


def read_messages(raw: bytes, *, echo: bool) -> tuple[MessagesBody, Ask]:
    """The body and what it asks; raises :class:`BadRequest` naming the bad field."""
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    ask = _ask(body, body.max_tokens, tuple(body.stop_sequences or ()))
    return body, msgspec.structs.replace(ask, echo=raw.decode() if echo else None)


def count_tokens(raw: bytes) -> dict[str, int]:
    """The answer to ``POST /v1/messages/count_tokens``."""
    try:
        body = _count_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    return {"input_tokens": _ask(body, None, ()).prompt_tokens}


def _ask(body: CountTokensBody, max_tokens: int | None, stop: tuple[str, ...]) -> Ask:
    said, words = "", count_words(_system_text(body.system))
    tool_results: list[str] = []
    offered: set[str] = set()
    for index, message in enumerate(body.messages):
        text, results, used = _read_blocks(message, f"messages[{index}].content", offered)
        words += count_words(text) + sum(count_words(result) for result in results)
        offered = used if message.role == "assistant" else set()
        if message.role == "user":
            tool_results = results
            said = text if text or not results else said
    choice = body.tool_choice
    mode: Literal["auto", "none", "required"] = "auto"
    forced = None
    if choice is not None:
        mode = _TOOL_MODES[choice.type]
        forced = choice.name if choice.type == "tool" else None
    return Ask(
        said=said,
        tool_results=tuple(tool_results),
        tools=tuple(Tool(t.name, t.input_schema) for t in body.tools or () if t.type is None),
        tool_mode=mode,
        forced_tool=forced,
        parallel=choice is None or not choice.disable_parallel_tool_use,
        stop=stop,
        max_tokens=max_tokens,
        prompt_tokens=words + 8,
    )


def _system_text(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    for index, block in enumerate(system):
        if block.get("type") != "text":
            raise BadRequest(f"system[{index}].type: expected 'text', got {block.get('type')!r}")
    return " ".join(str(block.get("text", "")) for block in system)


def _read_blocks(
    message: _Message, where: str, offered: set[str]
) -> tuple[str, list[str], set[str]]:
    """(text said, tool results given, tool_use ids made) of one message."""
    if isinstance(message.content, str):
        return message.content, [], set()
    pieces: list[str] = []
    results: list[str] = []
    used: set[str] = set()
    for index, block in enumerate(message.content):
        kind = block.get("type")
        if kind not in _BLOCK_TYPES:
            raise BadRequest(f"{where}[{index}].type: unknown content block type {kind!r}")
        if kind == "text":
            pieces.append(str(block.get("text", "")))
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") not in ("base64", "url"):
                raise BadRequest(f"{where}[{index}].source.type: expected 'base64' or 'url'")
            if source["type"] == "base64" and not (source.get("media_type") and source.get("data")):
                raise BadRequest(f"{where}[{index}].source: base64 needs media_type and data")
            pieces.append("[image]")
        elif kind == "tool_use":
            if message.role != "assistant":
                raise BadRequest(f"{where}[{index}]: tool_use blocks belong to assistant turns")
            if not isinstance(block.get("input"), dict):
                raise BadRequest(f"{where}[{index}].input: expected an object")
            used.add(str(block.get("id")))
        elif kind == "tool_result":
            if block.get("tool_use_id") not in offered:
                raise BadRequest(
                    f"{where}[{index}].tool_use_id: unexpected tool_use_id "
                    f"{block.get('tool_use_id')!r}: each tool_result block must answer a "
                    "tool_use block of the previous assistant message"
                )
            results.append(_result_text(block.get("content")))
        else:
            pieces.append(f"[{kind}]")
    return " ".join(pieces), results, used


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


# -- answers ---------------------------------------------------------------------------------

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _stop_reason(answer: Answer) -> str:
    return "stop_sequence" if answer.stop_sequence is not None else _STOP_REASONS[answer.finish]


def _blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.text is not None and (answer.text or not answer.tool_calls):
        blocks.append({"type": "text", "text": answer.text})
    for call in answer.tool_calls:
        arguments = msgspec.json.decode(call.arguments)
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def message(model: str, answer: Answer) -> dict[str, Any]:
    """A Messages response."""
    return {
        "id": next_id("msg_sim"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(answer),
        "stop_reason": _stop_reason(answer),
        "stop_sequence": answer.stop_sequence,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens},
    }


def _event(kind: str, body: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + _encoder.encode({"type": kind, **body}) + b"\n\n"


def events(model: str, answer: Answer) -> list[bytes]:
    """The SSE events of a streamed message: message_start, ping, each content block
    (start, deltas, stop), message_delta with the stop reason and usage, message_stop."""
    start: dict[str, Any] = {
        "id": next_id("msg_sim"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1},
    }
    out = [_event("message_start", {"message": start}), _event("ping", {})]
    for index, block in enumerate(_blocks(answer)):
        if block["type"] == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": piece} for piece in deltas(block["text"])]
        else:
            opened = {**block, "input": {}}
            arguments = _encoder.encode(block["input"]).decode()
            pieces = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in fragments(arguments)
            ]
        out.append(_event("content_block_start", {"index": index, "content_block": opened}))
        out += [_event("content_block_delta", {"index": index, "delta": d}) for d in pieces]
        out.append(_event("content_block_stop", {"index": index}))
    delta = {"stop_reason": _stop_reason(answer), "stop_sequence": answer.stop_sequence}
    usage = {"output_tokens": answer.completion_tokens}
    out += [
        _event("message_delta", {"delta": delta, "usage": usage}),
        _event("message_stop", {}),
    ]
    return out
