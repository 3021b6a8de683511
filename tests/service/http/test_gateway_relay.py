"""The SSE relay's pure parts, as tables: cutting bytes into events, finding the end marker,
renaming the model in an event without touching the rest."""

from __future__ import annotations

import msgspec
import pytest

from service.gateway.relay import (
    EventSplitter,
    chat_end,
    event_data,
    messages_end,
    rename_event,
)


@pytest.mark.parametrize(
    ("chunks", "events", "pending"),
    [
        ([b"data: 1\n\n"], [b"data: 1"], False),
        ([b"data: 1\n\ndata: 2\n\n"], [b"data: 1", b"data: 2"], False),
        ([b"data: 1\n", b"\ndata: 2"], [b"data: 1"], True),
        ([b"event: x\ndata: 1\r\n\r\n"], [b"event: x\ndata: 1"], False),
        ([b"data: 1\r", b"\n\r\n"], [b"data: 1"], False),  # a CRLF cut between two reads
        ([b": comment\n\n"], [b": comment"], False),
        ([b'data: {"a":', b" 1}\n\n"], [b'data: {"a": 1}'], False),
    ],
    ids=["one", "two in one read", "one and a partial", "crlf", "crlf split", "comment", "split"],
)
def test_the_splitter_cuts_whole_events(
    chunks: list[bytes], events: list[bytes], pending: bool
) -> None:
    splitter = EventSplitter()
    out = [event for chunk in chunks for event in splitter.feed(chunk)]
    assert (out, splitter.pending) == (events, pending)


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b"data: [DONE]", b"[DONE]"),
        (b"data:{}", b"{}"),
        (b"event: ping\ndata: {}", b"{}"),
        (b"data: a\ndata: b", b"a\nb"),
        (b": keep-alive", None),
    ],
)
def test_event_data(event: bytes, data: bytes | None) -> None:
    assert event_data(event) == data


@pytest.mark.parametrize(
    ("data", "chat", "messages"),
    [
        (b"[DONE]", True, False),
        (b'{"type": "message_stop"}', False, True),
        (b'{"type": "message_delta", "note": "message_stop"}', False, False),
        (b'{"choices": []}', False, False),
    ],
)
def test_end_markers(data: bytes, chat: bool, messages: bool) -> None:
    assert (chat_end(data), messages_end(data)) == (chat, messages)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            b'data: {"id":"c","model":"gpt-4o-mini-2024","choices":[{"delta":{"content":"hi"}}]}',
            {"id": "c", "model": "fast", "choices": [{"delta": {"content": "hi"}}]},
        ),
        (
            b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x",'
            b'"id":"m"}}',
            {"type": "message_start", "message": {"model": "fast", "id": "m"}},
        ),
    ],
    ids=["chat chunk", "anthropic message_start"],
)
def test_rename_sets_the_model_and_keeps_the_rest(event: bytes, expected: object) -> None:
    renamed = rename_event(event, event_data(event) or b"", "fast")
    head, _, data = renamed.rpartition(b"data: ")
    assert head == event.rpartition(b"data: ")[0]  # the event: line, if any, stays
    assert msgspec.json.decode(data) == expected


@pytest.mark.parametrize(
    "event",
    [b"data: [DONE]", b'data: {"choices": []}', b"data: not json", b'data: {"message": 3}'],
)
def test_rename_leaves_events_without_a_model_alone(event: bytes) -> None:
    assert rename_event(event, event_data(event) or b"", "fast") == event
