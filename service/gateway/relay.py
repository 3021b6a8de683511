"""Relaying an upstream's SSE stream to the client, events unchanged.

The upstream's bytes are read as they arrive (everything buffered at once) and
cut into whole events; each read becomes at most one write to the client, so a burst of
small events costs one socket write, not one per event (coalescing).  Events are re-emitted
as received, except that ``model`` is rewritten where the route aliases it, and the relay
watches for the format's end marker (``data: [DONE]`` for Chat Completions, ``message_stop``
for Anthropic Messages): a stream that ends without it did not complete, which the breaker
must count (:class:`MalformedResponseError`), as is an event longer than the transport's
``MAX_LINE`` (1 MiB: held in memory until its end arrives).

Pure parts (:class:`EventSplitter`, :func:`rename_event`) are separate from the I/O
(:func:`relay`), so they are tested as tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable

import msgspec

from service.llm.errors import MalformedResponseError
from service.llm.provider import Provider, drain
from service.llm.transport import MAX_LINE, Stream

_encoder = msgspec.json.Encoder()

#: Decides from one event's ``data`` whether the stream is complete.
EndMarker = Callable[[bytes], bool]


def chat_end(data: bytes) -> bool:
    return data == b"[DONE]"


def messages_end(data: bytes) -> bool:
    return data.startswith(b"{") and b'"message_stop"' in data and _type(data) == "message_stop"


def _type(data: bytes) -> str | None:
    try:
        return msgspec.json.decode(data, type=_Typed).type
    except msgspec.DecodeError:
        return None


class _Typed(msgspec.Struct):
    type: str | None = None


class EventSplitter:
    """Bytes in, whole SSE events out (each with its blank line), partial events kept."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._rest + chunk
        if b"\r" in data:
            if data.endswith(b"\r"):  # a CRLF cut in two: wait for its LF
                self._rest = data
                return []
            data = data.replace(b"\r\n", b"\n")
        *events, self._rest = data.split(b"\n\n")
        return events

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are held."""
        return bool(self._rest.strip())

    @property
    def held(self) -> int:
        """How many bytes of an unfinished event are held."""
        return len(self._rest)


def event_data(event: bytes) -> bytes | None:
    """The ``data`` of one event (its data lines joined), None for a comment-only event."""
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


def rename_event(event: bytes, data: bytes, model: str) -> bytes:
    """``event`` with the ``model`` of its JSON data set to ``model`` (other fields and the
    event's other lines kept); an event without a top-level ``model`` is left alone."""
    try:
        fields = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    except msgspec.DecodeError:
        return event
    if "model" in fields:
        fields["model"] = msgspec.Raw(_encoder.encode(model))
    elif "message" in fields:  # Anthropic's message_start carries it one level down
        try:
            message = msgspec.json.decode(fields["message"], type=dict[str, msgspec.Raw])
        except msgspec.DecodeError:
            return event
        if "model" not in message:
            return event
        message["model"] = msgspec.Raw(_encoder.encode(model))
        fields["message"] = msgspec.Raw(_encoder.encode(message))
    else:
        return event
    head = b"\n".join(line for line in event.split(b"\n") if not line.startswith(b"data:"))
    body = b"data: " + _encoder.encode(fields)
    return head + b"\n" + body if head else body


async def relay(
    provider: Provider,
    stream: Stream,
    *,
    end: EndMarker,
    model: str | None,
) -> AsyncGenerator[bytes, None]:
    """The upstream stream as byte batches to write, each whole events; ``model`` set renames
    the model in every event.  Raises :class:`MalformedResponseError` when the stream ends
    before its end marker, and the mapped error for a broken connection.  Releases the
    stream; after the end marker the rest of the body is read, so the connection is reused.
    """
    splitter = EventSplitter()
    read_timeout = provider.read_timeout(None)
    last: bytes | None = None
    try:
        async with contextlib.aclosing(provider.chunks(stream, None)) as chunks:
            async for chunk in chunks:
                out: list[bytes] = []
                done = False
                for event in splitter.feed(chunk):
                    data = event_data(event)
                    if data is not None:
                        if end(data):
                            done = True
                        elif model is not None:
                            event = rename_event(event, data, model)
                    out.append(event)
                    out.append(b"\n\n")
                if done:
                    # Read the rest before the last write: the connection goes back to the
                    # pool even when the client stops reading right after the end marker.
                    await drain(stream, read_timeout)
                    last = b"".join(out)
                    break
                if splitter.held > MAX_LINE:
                    raise MalformedResponseError(
                        f"a streamed event exceeds {MAX_LINE} bytes", provider=provider.name
                    )
                if out:
                    yield b"".join(out)
    except BaseException:
        stream.close()
        raise
    stream.release()
    if last is None:
        raise MalformedResponseError(
            "the stream ended before its end marker", provider=provider.name
        )
    yield last
