"""Server-Sent Events, as both providers stream them: a line decoder and an async iterator.

Per the HTML spec: ``field: value`` lines, ``data`` lines joined with newlines, a blank line
dispatches, lines starting with ``:`` are comments.  An event not terminated by a blank line
when the stream ends is dropped, which is what makes a truncated stream detectable.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import msgspec


class SSEEvent(msgspec.Struct, frozen=True):
    """One dispatched event: its type (``""`` when the stream names none) and its data."""

    event: str
    data: str


class SSEDecoder:
    """Feed it lines, get events.  Pure: no I/O."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        """Take one line (with or without its line ending); return the event it completes."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event, "\n".join(self._data))
            self._event = ""
            self._data = []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


async def iter_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """The events in a stream of lines (an ``aiohttp.StreamReader`` iterates by line).

    Raises ``UnicodeDecodeError`` (a ``ValueError``) for bytes that are not UTF-8.
    """
    decoder = SSEDecoder()
    async for raw in lines:
        event = decoder.feed(raw.decode("utf-8"))
        if event is not None:
            yield event
