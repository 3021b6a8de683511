"""The SSE relay's pure parts, as tables (cutting bytes into events, finding the end marker,
renaming the model in an event without touching the rest), and its limit over a real
connection."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from service.gateway.relay import (
    EventSplitter,
    chat_end,
    event_data,
    messages_end,
    relay,
    rename_event,
)
from service.llm.errors import MalformedResponseError
from service.llm.provider import Provider
from service.llm.settings import ProviderOptions, ProviderSettings
from service.llm.transport import MAX_LINE, Transport


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


# -- the relay over a real connection ---------------------------------------------------------


@pytest.mark.anyio
async def test_an_event_that_never_ends_is_cut_at_the_limit() -> None:
    """An upstream streaming one endless event would grow the gateway's buffer without bound:
    past MAX_LINE the stream fails (counted: the upstream's doing) and the connection closes."""

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6\r\ndata: \r\n")
        piece = b"x" * 65536
        try:
            for _ in range(2 * MAX_LINE // len(piece)):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
        except ConnectionError:
            pass  # the gateway gave up: expected
        finally:
            writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = ProviderOptions.parse(
        {"provider": "openai", "api_key": "sk-x", "base_url": f"http://127.0.0.1:{port}/v1"},
        where="test",
    )
    provider = Provider(ProviderSettings.resolve(options, environ={}))
    transport = Transport()
    async with server:
        stream = await provider.open(transport, f"http://127.0.0.1:{port}/v1/chat", b"{}", {}, 5)
        with pytest.raises(MalformedResponseError, match="exceeds"):
            async for _ in relay(provider, stream, end=chat_end, model=None):
                pass
        assert transport.idle == 0
        transport.close()
