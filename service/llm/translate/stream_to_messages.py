"""A Chat Completions stream as Anthropic Messages events, one chunk at a time.

Anthropic streams content blocks one after the other: each is opened
(``content_block_start``), filled (``text_delta`` or ``input_json_delta``) and closed
(``content_block_stop``) before the next opens.  The machine's state is the open block (text,
or the tool call with a given Chat index) and the block index to use next; a chunk that needs
a different block closes the open one first.  OpenAI streams one tool call after the other
too; arguments for a call whose block is already closed (a provider interleaving parallel
calls) cannot be expressed, and are refused with :class:`UntranslatableError`.  Whole calls in
one delta (servers that do not stream arguments) are blocks opened and closed in turn; a call
delta without ``index`` is told apart by its ``id``.

The first chunk opens the message (``message_start``, with zero usage: a Chat stream reports
tokens only at its end); :meth:`finish`, at ``[DONE]``, closes the open block and sends
``message_delta`` (``stop_reason``, and the usage, input tokens included, since message_delta
usage counts are cumulative) and ``message_stop``.  A refusal streams as text with
``stop_reason: refusal``; an OpenAI error chunk becomes an ``error`` event (its type mapped to
one Anthropic's SDK knows) and ends the stream.
"""

from __future__ import annotations

from typing import Any

from service.llm.translate.errors import refuse
from service.llm.translate.vocab import anthropic_error_type, messages_usage, stop_reason

__all__ = ["ChatStreamToMessages"]

Event = tuple[str, dict[str, Any]]

_TEXT = "text"  # the open block's key when it is text (a tool call's key is its Chat index)


class ChatStreamToMessages:
    """Chat Completions chunks -> Anthropic SSE events (see the module docstring).

    ``model`` is the model name the client asked for, ``message_id`` the ``id`` of the
    message.  Pure and synchronous: :meth:`feed` and :meth:`finish` return ``(event name,
    data)`` pairs to send and never perform I/O.
    """

    __slots__ = (
        "_finish",
        "_id",
        "_model",
        "_next",
        "_open",
        "_refused",
        "_started",
        "_tools",
        "_usage",
        "done",
    )

    def __init__(self, *, model: str, message_id: str) -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._open: tuple[int, str | int] | None = None  # (block index, _TEXT or tool index)
        self._next = 0
        self._tools: dict[int, str] = {}  # Chat tool call index -> id, for the calls opened
        self._finish: str | None = None
        self._refused = False
        self._usage: dict[str, Any] = {}
        #: True once :meth:`finish` has run, or an error chunk arrived.
        self.done = False

    def __repr__(self) -> str:
        return f"<ChatStreamToMessages {self._id!r} blocks={self._next} done={self.done}>"

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events for one decoded chunk (often one, sometimes none or several)."""
        events = self._begin()
        error = chunk.get("error")
        if error is not None:
            self.done = True
            error = error if isinstance(error, dict) else {"message": str(error)}
            body = {
                "type": anthropic_error_type(error.get("type")),
                "message": error.get("message") or "",
            }
            events.append(("error", {"type": "error", "error": body}))
            return events
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a translated request never asks for n > 1
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._text(delta["content"], events)
            if delta.get("refusal"):
                self._refused = True
                self._text(delta["refusal"], events)
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, events)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def finish(self) -> list[Event]:
        """The closing events, at the stream's ``[DONE]``."""
        events = self._begin()
        self._close(events)
        reason = "refusal" if self._refused else stop_reason(self._finish)
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": None},
                    "usage": messages_usage(self._usage),
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        self.done = True
        return events

    def _begin(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _text(self, text: str, events: list[Event]) -> None:
        if self._open is None or self._open[1] != _TEXT:
            self._open_block(_TEXT, {"type": "text", "text": ""}, events)
        assert self._open is not None
        delta = {"type": "text_delta", "text": text}
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": self._open[0], "delta": delta},
            )
        )

    def _tool_call(self, call: dict[str, Any], events: list[Event]) -> None:
        function = call.get("function") or {}
        index = call.get("index")
        call_id = call.get("id")
        if index is None:
            # Some OpenAI-compatible servers leave the index out (sending whole calls): a new id
            # is a new call, anything else continues the call in progress.
            if call_id and call_id not in self._tools.values():
                index = len(self._tools)
            elif self._open is not None and isinstance(self._open[1], int):
                index = self._open[1]
            else:
                refuse("tool_calls", "a tool call delta without index, id or a call in progress")
        if index not in self._tools:
            if not call_id or not function.get("name"):
                refuse(
                    f"tool_calls[{index}]",
                    "the first delta of a tool call must have its id and name",
                )
            self._tools[index] = call_id
            block = {"type": "tool_use", "id": call["id"], "name": function["name"], "input": {}}
            self._open_block(index, block, events)
        elif self._open is None or self._open[1] != index:
            refuse(
                f"tool_calls[{index}]",
                "arguments arrived after another block started "
                "(Anthropic streams one block at a time)",
            )
        assert self._open is not None
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._open[0], "delta": delta},
                )
            )

    def _open_block(self, key: str | int, block: dict[str, Any], events: list[Event]) -> None:
        self._close(events)
        self._open = (self._next, key)
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._next, "content_block": block},
            )
        )
        self._next += 1

    def _close(self, events: list[Event]) -> None:
        if self._open is not None:
            events.append(
                ("content_block_stop", {"type": "content_block_stop", "index": self._open[0]})
            )
            self._open = None
