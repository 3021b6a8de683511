"""An Anthropic Messages stream as Chat Completions chunks, one event at a time.

The machine's state is the map from Anthropic content block index to what the block becomes:
text (``delta.content``), a tool call (``delta.tool_calls[k]``, numbered in the order the
calls start, as OpenAI numbers them), the structured answer (the forced tool's input JSON,
streamed as ``delta.content``), or nothing (thinking blocks).  The chunks follow OpenAI's
order and shape: the first chunk has ``role: assistant`` and comes with the first content
block, as OpenAI's does with the first token (``content: ""`` before text, ``content: null``
beside a first tool call, so that a client assembling a tool-only answer gets ``None``); text
and tool-call deltas (a call's first delta has ``id``, ``type`` and ``function.name``, later
ones only ``arguments`` fragments); a chunk with an empty delta and the ``finish_reason`` (at
``message_delta``); with ``include_usage``, a last chunk with empty ``choices`` and the
``usage`` (at ``message_stop``), and ``"usage": null`` on every chunk before it, as OpenAI
sends them.

With ``structured``, text blocks are held until ``message_delta``, so that the stream says what
the non-stream answer says: text beside the forced tool's input is dropped (the input is the
answer), a refusal goes to ``delta.refusal``, other text to ``delta.content``.

An ``error`` event becomes an OpenAI error chunk (``{"error": {"message", "type", ...}}``, what
OpenAI sends mid-stream) and ends the stream; ``ping`` and event types added later produce
nothing.
"""

from __future__ import annotations

from typing import Any

from service.llm.translate.vocab import chat_usage, finish_reason

__all__ = ["MessagesStreamToChat"]

# What an Anthropic content block becomes in the Chat stream.
_TEXT = -1
_STRUCTURED = -2
_SKIPPED = -3
_HELD = -4  # text beside a structured answer: held until the stop reason says what it is
# (a tool call's block maps to its tool call index, 0 and up)


class MessagesStreamToChat:
    """Anthropic SSE events -> Chat Completions chunks (see the module docstring).

    ``completion_id`` and ``created`` go into every chunk, ``model`` is the name the client
    asked for; ``include_usage`` is the request's ``stream_options.include_usage``;
    ``structured`` is true when the request's ``response_format`` was sent as a forced tool.
    Pure and synchronous: :meth:`feed` returns the chunks to send, it never performs I/O.
    """

    __slots__ = (
        "_answered",
        "_blocks",
        "_created",
        "_held",
        "_id",
        "_include_usage",
        "_model",
        "_role_sent",
        "_structured",
        "_tool_calls",
        "_usage",
        "done",
    )

    def __init__(
        self,
        *,
        model: str,
        completion_id: str,
        created: int,
        include_usage: bool,
        structured: bool = False,
    ) -> None:
        self._model = model
        self._id = completion_id
        self._created = created
        self._include_usage = include_usage
        self._structured = structured
        self._blocks: dict[int, int] = {}
        self._tool_calls = 0
        self._usage: dict[str, Any] = {}
        self._role_sent = False
        self._held: list[str] = []
        self._answered = False  # a structured answer's tool block has started
        #: True once ``message_stop`` (or ``error``) has arrived.
        self.done = False

    def __repr__(self) -> str:
        return (
            f"<MessagesStreamToChat {self._id!r} blocks={len(self._blocks)} "
            f"tool_calls={self._tool_calls} done={self.done}>"
        )

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one event (``event`` is the SSE event name, ``data`` its decoded
        JSON); often none."""
        match event:
            case "content_block_delta":
                return self._delta(data["index"], data["delta"])
            case "content_block_start":
                return self._start(data["index"], data["content_block"])
            case "message_start":
                self._usage.update(data["message"].get("usage") or {})
                return []
            case "message_delta":
                self._usage.update(
                    {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
                )
                stop = (data.get("delta") or {}).get("stop_reason")
                chunks = self._release_held(stop)
                if not self._role_sent:
                    chunks.append(self._chunk(self._opening({"content": ""})))
                chunks.append(self._chunk({}, finish_reason(stop, structured=self._structured)))
                return chunks
            case "message_stop":
                self.done = True
                if not self._include_usage:
                    return []
                return [self._frame([], chat_usage(self._usage))]
            case "error":
                self.done = True
                error = data.get("error") or {}
                return [
                    {
                        "error": {
                            "message": error.get("message", ""),
                            "type": error.get("type"),
                            "param": None,
                            "code": None,
                        }
                    }
                ]
        # ping, content_block_stop, and event types added later: nothing to send.
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        match block.get("type"):
            case "text" if self._structured:
                self._blocks[index] = _HELD
                self._held.append(block.get("text") or "")
                return []
            case "text":
                self._blocks[index] = _TEXT
                text = block.get("text") or ""
                if self._role_sent and not text:
                    return []
                return [self._chunk(self._opening({"content": text}))]
            case "tool_use" if self._structured:
                self._blocks[index] = _STRUCTURED
                self._answered = True
                return [] if self._role_sent else [self._chunk(self._opening({"content": ""}))]
            case "tool_use":
                call = self._tool_calls
                self._tool_calls += 1
                self._blocks[index] = call
                first = {
                    "index": call,
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": ""},
                }
                return [self._chunk(self._opening({"content": None, "tool_calls": [first]}))]
        self._blocks[index] = _SKIPPED  # thinking: Chat has no field for it
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        target = self._blocks.get(index, _SKIPPED)
        kind = delta.get("type")
        if kind == "text_delta" and target == _TEXT:
            text = delta.get("text")
            return [self._chunk({"content": text})] if text else []
        if kind == "text_delta" and target == _HELD:
            self._held.append(delta.get("text") or "")
            return []
        if kind != "input_json_delta" or not delta.get("partial_json"):
            return []  # thinking, signature and citation deltas; Anthropic's opening ""
        fragment = delta["partial_json"]
        if target == _STRUCTURED:
            return [self._chunk({"content": fragment})]
        if target >= 0:
            return [
                self._chunk(
                    {"tool_calls": [{"index": target, "function": {"arguments": fragment}}]}
                )
            ]
        return []

    def _release_held(self, stop: str | None) -> list[dict[str, Any]]:
        """The text held beside a structured answer, as the non-stream translation reports it:
        nothing when the forced tool answered, ``refusal`` when the model refused, else
        ``content``."""
        text = "".join(self._held)
        if self._answered or not text:
            return []
        return [self._chunk(self._opening({"refusal" if stop == "refusal" else "content": text}))]

    def _opening(self, delta: dict[str, Any]) -> dict[str, Any]:
        """``delta`` as the stream's first (with the role), or as it is once the role is sent
        (then without a ``content: null`` beside tool calls)."""
        if self._role_sent:
            return {k: v for k, v in delta.items() if v is not None}
        self._role_sent = True
        return {"role": "assistant", **delta}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._frame([choice], None)

    def _frame(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage
        return chunk
