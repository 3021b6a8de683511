"""The HTTP/1.1 client the LLM client and the gateway call providers with.

What it does: POST a body to a provider over a pool of kept-alive connections, and give back
either the whole answer (:meth:`Transport.fetch`) or the answer's head with its body to read as
it arrives (:meth:`Transport.open`, for streams).  Parsing is llhttp's, through ``httptools``
(the parser uvicorn serves HTTP with); what is written here is the framing of one request and
the bookkeeping of connections, nothing a provider call does not need: no cookies, no
redirects (a 3xx is an answer like any other), no proxies, no content negotiation (requests
ask for nothing, so answers come uncompressed; a gzip or deflate answer is inflated anyway).

Why not aiohttp's client, which the service used before: measured on the gateway's path, an
aiohttp ``ClientSession.post`` plus ``read`` costs about 100 µs of CPU per request at 64
concurrent requests on this project's 2-core bench machine, and this client 22-25 µs
(same upstream, same body, ``/tmp``-free script in the issue 12 note).  That exchange was the
largest single part of the gateway's CPU per request, which issue 12 bounds at 3x the bare
upstream's.  aiohttp's client does much more per request (tracing hooks, cookie jar,
timeouts as objects, redirects, a payload registry, a per-request ``ClientRequest`` and
``ClientResponse``); none of it is used by a provider call.

Limits and defaults: a connection stays idle in the pool at most ``KEEPALIVE_EXPIRY`` (15 s,
below common server idle timeouts); a stream's unread buffer above ``HIGH_WATER`` (256 KiB)
pauses reading from the socket; a streamed line (SSE) longer than ``MAX_LINE`` (1 MiB) is an
error.  Concurrency is bounded by the caller (the provider's connection slots), not here.

Errors: :class:`TimeoutError` (connect, total or per-read), :class:`ConnectionError` (refused,
reset, closed before or during the answer: :class:`AnswerCutError` once the head arrived),
:class:`ProtocolError` (an answer that is not HTTP/1.1), :class:`InvalidURLError`, and
``ValueError`` for a header value that cannot be sent (a line break in it).
``service.llm.errors.error_for_transport`` maps them to the provider errors.

Which task runs what: everything runs on the loop that made the :class:`Transport` (one per
loop, see ``service.llm.sessions``); the protocol callbacks run on that loop's transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Final
from urllib.parse import urlsplit

import httptools

KEEPALIVE_EXPIRY: Final = 15.0
HIGH_WATER: Final = 256 * 1024
MAX_LINE: Final = 1024 * 1024
_MAX_TARGETS: Final = 1024


class ProtocolError(Exception):
    """The peer's answer is not valid HTTP/1.1."""


class AnswerCutError(ConnectionError):
    """The connection ended after the answer began and before it was complete."""


class InvalidURLError(ValueError):
    """A URL this client cannot call (not http or https, or without a host)."""


class Headers(Mapping[str, str]):
    """An answer's headers, looked up case-insensitively; a repeated header's values are
    joined with ``, `` (RFC 9110 5.3)."""

    __slots__ = ("_items",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        items: dict[str, str] = {}
        for raw_name, raw_value in pairs:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            items[name] = f"{items[name]}, {value}" if name in items else value
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<Headers {sorted(self._items)}>"  # names only: values may be sensitive


class Target:
    """A parsed URL: where to connect and what to put on the request line."""

    __slots__ = ("host", "origin", "path", "port", "prefix", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidURLError(f"cannot call {url!r}: expected an http:// or https:// URL")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise InvalidURLError(f"cannot call {url!r}: invalid port") from None
        self.port = port or (443 if self.tls else 80)
        self.origin = (self.tls, self.host, self.port)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]  # never send userinfo in Host
        self.prefix = f"POST {self.path} HTTP/1.1\r\nHost: {netloc}\r\n".encode("latin-1")


def _head(target: Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = [target.prefix]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r}: a line break cannot be sent in a header")
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(lines)


class Answer:
    """A whole answer: status, headers and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Answer {self.status} {len(self.body)} bytes>"


class Stream:
    """An answer whose body is read as it arrives.  Call :meth:`release` (back to the pool
    when the body was read to its end, else closed) or :meth:`close` when done."""

    __slots__ = ("_connection", "headers", "status")

    def __init__(self, connection: _Connection, status: int, headers: Headers) -> None:
        self._connection = connection
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"<Stream {self.status}>"

    @property
    def at_eof(self) -> bool:
        return self._connection.complete and not self._connection.chunks

    @property
    def buffered(self) -> int:
        """Body bytes received and not read yet (reading from the socket pauses above
        ``HIGH_WATER``)."""
        return self._connection.buffered

    async def chunks(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (everything buffered at once per item) until its end.
        ``read_timeout`` bounds each wait for more."""
        connection = self._connection
        while True:
            chunk = await connection.next_chunk(read_timeout)
            if not chunk:
                return
            yield chunk

    async def lines(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        """Body lines, each with its ``\\n`` (the last one may lack it).  Raises ``ValueError``
        for a line longer than ``MAX_LINE``."""
        rest = b""
        async for chunk in self.chunks(read_timeout):
            data = rest + chunk if rest else chunk
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                yield data[start : end + 1]
                start = end + 1
            rest = data[start:]
            if len(rest) > MAX_LINE:
                raise ValueError(f"a streamed line exceeds {MAX_LINE} bytes")
        if rest:
            yield rest

    async def read(self, read_timeout: float | None = None) -> bytes:
        """The rest of the body."""
        return b"".join([chunk async for chunk in self.chunks(read_timeout)])

    def release(self) -> None:
        self._connection.finish()

    def close(self) -> None:
        self._connection.abort()


class _Connection(asyncio.Protocol):
    """One kept-alive connection and the exchange on it (one at a time)."""

    def __init__(self, transport: Transport, origin: tuple[bool, str, int]) -> None:
        self._owner = transport
        self.origin = origin
        self._parser = httptools.HttpResponseParser(self)
        self._socket: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # an exchange is under way (from send to finish)
        self.idle_since = 0.0
        # The exchange under way.
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._pairs: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.headers: Headers | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._paused = False
        self.complete = False
        self._keep_alive = False
        self._until_close = False
        self._inflate: zlib._Decompress | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._socket = transport

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.abort()  # bytes on an idle connection: nothing we asked for
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP answer ({exc})"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy:
            self._owner.forget(self)  # idle in the pool: the server closed it
            return
        if self.complete:
            return  # the answer was whole
        if self._until_close and exc is None and self.headers is not None:
            self._message_done()  # an answer delimited by the connection's end
            return
        if self.headers is None:
            self._fail(ConnectionError(f"the connection closed before the answer ({exc or 'EOF'})"))
        else:
            self._fail(AnswerCutError(f"the connection closed mid-answer ({exc or 'EOF'})"))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._pairs.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._pairs = []
            return
        headers = Headers(self._pairs)
        self._pairs = []
        self.status = status
        self.headers = headers
        self._keep_alive = self._parser.should_keep_alive()
        self._until_close = (
            "content-length" not in headers
            and "chunked" not in (headers.get("transfer-encoding") or "").lower()
            and status not in (204, 304)
        )
        encoding = (headers.get("content-encoding") or "").lower()
        if encoding in ("gzip", "deflate"):
            self._inflate = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, detected
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._inflate is not None:
            try:
                body = self._inflate.decompress(body)
            except zlib.error as exc:
                self._fail(ProtocolError(f"undecodable compressed answer ({exc})"))
                self.abort()
                return
        if body:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self._paused and self._socket is not None:
                self._paused = True
                self._socket.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.headers is None:
            return  # the end of an interim answer
        self._message_done()

    # -- the exchange ---------------------------------------------------------------------------

    def _message_done(self) -> None:
        if self._inflate is not None:
            tail = self._inflate.flush()
            if tail:
                self.chunks.append(tail)
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _time_out(self) -> None:
        self._fail(TimeoutError("the provider did not answer in time"))
        self.abort()

    def send(self, data: bytes) -> None:
        self.busy = True
        self._failure = None
        self.status = 0
        self.headers = None
        self.complete = False
        self._until_close = False
        self._inflate = None
        self.buffered = 0
        self.chunks.clear()
        assert self._socket is not None
        self._socket.write(data)

    async def wait(self, *, head_only: bool, deadline: float | None) -> None:
        """Until the head (``head_only``) or the whole answer has arrived."""
        loop = self._owner.loop
        timer = loop.call_at(deadline, self._time_out) if deadline is not None else None
        try:
            while (self.headers is None) if head_only else not self.complete:
                if self._failure is not None:
                    raise self._failure
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        finally:
            if timer is not None:
                timer.cancel()

    async def next_chunk(self, read_timeout: float | None) -> bytes:
        """The buffered body bytes (joined), waiting for some; b"" at the end of the body."""
        while not self.chunks:
            if self.complete:
                return b""
            if self._failure is not None:
                raise self._failure
            loop = self._owner.loop
            timer = (
                loop.call_at(loop.time() + read_timeout, self._time_out)
                if read_timeout is not None
                else None
            )
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._paused and self._socket is not None:
            self._paused = False
            self._socket.resume_reading()
        return data

    def body(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    def finish(self) -> None:
        """The exchange is over: back to the pool if the answer was read whole and the
        connection may be kept, else closed."""
        self.busy = False
        socket = self._socket
        if (
            self.complete
            and not self.chunks
            and self._keep_alive
            and not self.closed
            and socket is not None
            and not socket.get_write_buffer_size()  # an early answer, our body still going
        ):
            self._owner.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self._socket is not None:
            self._socket.abort()


class Transport:
    """Kept-alive connections per origin, on the loop that made it.  ``ssl_context`` serves
    every https origin (default: the system's trust store, verified); a connection idle for
    ``keepalive_expiry`` seconds is closed rather than reused."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._ssl = ssl_context
        self._expiry = keepalive_expiry
        self._idle: dict[tuple[bool, str, int], collections.deque[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"<Transport {'closed' if self.closed else 'open'} idle={self.idle}>"

    @property
    def idle(self) -> int:
        """Connections kept open for reuse."""
        return sum(len(pool) for pool in self._idle.values())

    def target(self, url: str) -> Target:
        """``url`` parsed, remembered (the URLs called are few: base URLs plus paths)."""
        found = self._targets.get(url)
        if found is None:
            found = Target(url)
            if len(self._targets) < _MAX_TARGETS:
                self._targets[url] = found
        return found

    async def fetch(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float,
        connect_timeout: float,
    ) -> Answer:
        """POST ``body``; the whole answer, within ``timeout`` seconds in all."""
        deadline = self.loop.time() + timeout
        connection = await self._exchange(url, headers, body, min(connect_timeout, timeout))
        try:
            await connection.wait(head_only=False, deadline=deadline)
        except BaseException:
            connection.abort()
            raise
        assert connection.headers is not None
        answer = Answer(connection.status, connection.headers, connection.body())
        connection.finish()
        return answer

    async def open(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> Stream:
        """POST ``body``; the answer's head, its body to read from the returned stream.
        ``read_timeout`` bounds the wait for the head (and, passed to the stream's readers,
        each later read)."""
        connection = await self._exchange(url, headers, body, connect_timeout)
        try:
            await connection.wait(head_only=True, deadline=self.loop.time() + read_timeout)
        except BaseException:
            connection.abort()
            raise
        assert connection.headers is not None
        return Stream(connection, connection.status, connection.headers)

    async def _exchange(
        self, url: str, headers: Mapping[str, str], body: bytes, connect_timeout: float
    ) -> _Connection:
        if self.closed:
            raise RuntimeError("the HTTP transport is closed")
        target = self.target(url)
        data = _head(target, headers, len(body)) + body
        connection = self._take(target.origin)
        if connection is None:
            connection = await self._connect(target, connect_timeout)
        connection.send(data)
        return connection

    def _take(self, origin: tuple[bool, str, int]) -> _Connection | None:
        pool = self._idle.get(origin)
        if not pool:
            return None
        expired = self.loop.time() - self._expiry
        while pool:
            connection = pool.pop()  # the most recently used: the least likely to be stale
            if not connection.closed and connection.idle_since > expired:
                return connection
            connection.abort()
        return None

    async def _connect(self, target: Target, connect_timeout: float) -> _Connection:
        ssl_context: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ssl_context = self._ssl
        async with asyncio.timeout(connect_timeout):
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self, target.origin),
                target.host,
                target.port,
                ssl=ssl_context,
                server_hostname=target.host if ssl_context is not None else None,
            )
        return connection

    def put(self, connection: _Connection) -> None:
        if self.closed:
            connection.abort()
            return
        now = self.loop.time()
        connection.idle_since = now
        pool = self._idle.setdefault(connection.origin, collections.deque())
        pool.append(connection)
        expired = now - self._expiry
        while pool and pool[0].idle_since <= expired:  # the oldest first
            pool.popleft().abort()

    def forget(self, connection: _Connection) -> None:
        """Drop a pooled connection that closed while idle."""
        pool = self._idle.get(connection.origin)
        if pool is not None and connection in pool:
            pool.remove(connection)

    def close(self) -> None:
        """Close every idle connection; those in use close when their exchange ends."""
        self.closed = True
        for pool in self._idle.values():
            while pool:
                pool.pop().abort()
        self._idle.clear()
