"""The providers' HTTP/1.1 transport against real servers on 127.0.0.1: aiohttp servers for
the usual answers, raw asyncio servers for the bytes no well-behaved server sends."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web

from service.llm.errors import MalformedResponseError, NetworkTimeoutError, error_for_transport
from service.llm.transport import (
    HIGH_WATER,
    AnswerCutError,
    InvalidURLError,
    ProtocolError,
    Transport,
)

pytestmark = pytest.mark.anyio

BODY = b'{"model":"m","messages":[]}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-secret"}


class Upstream:
    """An aiohttp server that records what it received and on which connection."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.connections: set[int] = set()
        self.url = ""

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))
        assert request.transport is not None
        self.connections.add(id(request.transport))
        kind = request.match_info["kind"]
        if kind == "json":
            return web.json_response({"ok": True}, headers={"X-Ratelimit-Reset": "1s"})
        if kind == "close":
            response = web.json_response({"ok": True})
            response.force_close()
            return response
        if kind == "gzip":
            return web.Response(
                body=gzip.compress(b'{"zipped": true}'),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if kind == "error":
            return web.json_response({"error": {"message": "nope"}}, status=429)
        # kind == "stream": chunked, one event per write, then a big one
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in (b"one", b"two", b"three"):
            await response.write(b"data: " + word + b"\n\n")
        await response.write(b"data: " + b"x" * (3 * HIGH_WATER) + b"\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream()
    app = web.Application()
    app.router.add_post("/v1/{kind}", recorder.answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder.url = f"http://127.0.0.1:{port}/v1/"
    yield recorder
    await runner.cleanup()


@contextlib.asynccontextmanager
async def transport(**options: object) -> AsyncIterator[Transport]:
    made = Transport(**options)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        made.close()
        await asyncio.sleep(0)  # aborted sockets close on the next turn of the loop


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A server that runs ``script`` on each connection; yields its base URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1/chat"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_a_whole_answer_and_what_was_sent(upstream: Upstream) -> None:
    async with transport() as http:
        answer = await http.fetch(
            upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5
        )
    assert answer.status == 200
    assert answer.body == b'{"ok": true}'
    assert answer.headers["x-ratelimit-reset"] == "1s"  # any case
    assert answer.headers.get("X-RATELIMIT-RESET") == "1s"
    assert upstream.bodies == [BODY]
    sent = upstream.headers[0]
    assert sent["Authorization"] == "Bearer sk-secret"
    assert sent["Content-Length"] == str(len(BODY))
    assert sent["Host"] == upstream.url.split("/")[2]


async def test_connections_are_kept_alive_and_reused(upstream: Upstream) -> None:
    async with transport() as http:
        for _ in range(5):
            await http.fetch(upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5)
        assert http.idle == 1
    assert len(upstream.connections) == 1


async def test_concurrent_exchanges_each_get_a_connection_then_share_them(
    upstream: Upstream,
) -> None:
    async with transport() as http:
        await asyncio.gather(
            *(
                http.fetch(upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5)
                for _ in range(4)
            )
        )
        assert http.idle == 4
        for _ in range(8):
            await http.fetch(upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5)
    assert len(upstream.connections) == 4
    assert len(upstream.bodies) == 12


async def test_connection_close_is_honoured(upstream: Upstream) -> None:
    async with transport() as http:
        for _ in range(3):
            answer = await http.fetch(
                upstream.url + "close", HEADERS, BODY, timeout=5, connect_timeout=5
            )
            assert answer.body == b'{"ok": true}'
        assert http.idle == 0
    assert len(upstream.connections) == 3


async def test_an_expired_idle_connection_is_not_reused(upstream: Upstream) -> None:
    async with transport(keepalive_expiry=0.0) as http:
        for _ in range(3):
            await http.fetch(upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5)
    assert len(upstream.connections) == 3


async def test_gzip_answers_are_inflated(upstream: Upstream) -> None:
    async with transport() as http:
        answer = await http.fetch(
            upstream.url + "gzip", HEADERS, BODY, timeout=5, connect_timeout=5
        )
    assert answer.body == b'{"zipped": true}'


async def test_an_error_status_is_an_answer_and_the_connection_stays(upstream: Upstream) -> None:
    async with transport() as http:
        answer = await http.fetch(
            upstream.url + "error", HEADERS, BODY, timeout=5, connect_timeout=5
        )
        assert answer.status == 429
        assert b"nope" in answer.body
        assert http.idle == 1


async def test_a_stream_by_lines_with_backpressure_then_reuse(upstream: Upstream) -> None:
    async with transport() as http:
        stream = await http.open(
            upstream.url + "stream", HEADERS, BODY, read_timeout=5, connect_timeout=5
        )
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        lines = [line async for line in stream.lines(5)]
        stream.release()
        assert lines[:6] == [b"data: one\n", b"\n", b"data: two\n", b"\n", b"data: three\n", b"\n"]
        assert lines[6] == b"data: " + b"x" * (3 * HIGH_WATER) + b"\n"
        assert http.idle == 1
        await http.fetch(upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5)
    assert len(upstream.connections) == 1


async def test_reading_pauses_while_a_stream_is_not_read() -> None:
    size = 8 * 1024 * 1024
    written = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"y" * 65536)
            await writer.drain()
        written.set()
        await reader.read()

    async with raw_server(script) as url, transport() as http:
        stream = await http.open(url, HEADERS, BODY, read_timeout=5, connect_timeout=5)
        most = 0
        for _ in range(300):
            await turns(1)
            most = max(most, stream.buffered)
        assert not written.is_set()  # the server is held back by the client's full buffer
        assert most <= HIGH_WATER + 256 * 1024  # at most one socket read beyond the mark
        assert len(await stream.read(5)) == size
        stream.release()
        assert written.is_set()


async def test_a_stream_left_unread_closes_its_connection(upstream: Upstream) -> None:
    async with transport() as http:
        stream = await http.open(
            upstream.url + "stream", HEADERS, BODY, read_timeout=5, connect_timeout=5
        )
        async for _ in stream.chunks(5):
            break
        stream.release()  # not read to its end: closed, not pooled
        assert http.idle == 0


async def test_an_answer_delimited_by_the_end_of_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": 1}')
        await writer.drain()

    async with raw_server(script) as url, transport() as http:
        answer = await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
        assert (answer.status, answer.body) == (200, b'{"a": 1}')
        assert http.idle == 0


async def turns(count: int) -> None:
    """Let the loop run ``count`` times (client and server share it): no wall-clock wait."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # then closes, as a server's idle timeout does

    async with raw_server(script) as url, transport() as http:
        await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
        for _ in range(1000):  # until the server's FIN reaches the idle connection
            if not http.idle:
                break
            await turns(1)
        assert http.idle == 0  # dropped as soon as the server closed it, not at reuse
        answer = await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
    assert answer.body == b"ok"
    assert connections == 2


async def test_an_interim_answer_is_skipped() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        await writer.drain()
        await turns(10)  # the client reads the interim answer on its own
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()  # until the client closes

    async with raw_server(script) as url, transport() as http:
        answer = await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
    assert (answer.status, answer.body) == (200, b"ok")
    assert "link" not in answer.headers


@pytest.mark.parametrize(
    ("answer", "raised", "mapped"),
    [
        (
            b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half',
            AnswerCutError,
            NetworkTimeoutError,
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ProtocolError, MalformedResponseError),
    ],
    ids=["closed mid-answer", "not HTTP"],
)
async def test_a_broken_answer_and_what_the_breaker_makes_of_it(
    answer: bytes, raised: type[Exception], mapped: type[Exception]
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()  # then closes

    async with raw_server(script) as url, transport() as http:
        with pytest.raises(raised) as caught:
            await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
    assert isinstance(error_for_transport("p", caught.value), mapped)


async def test_a_connection_closed_before_any_answer() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(script) as url, transport() as http:
        with pytest.raises(ConnectionError) as caught:
            await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
    assert not isinstance(caught.value, AnswerCutError)


async def test_the_total_timeout_bounds_a_silent_upstream() -> None:
    heard = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        heard.set()
        await reader.read()  # never answers; returns when the client gives up

    async with raw_server(script) as url, transport() as http:
        with pytest.raises(TimeoutError):
            await http.fetch(url, HEADERS, BODY, timeout=0.05, connect_timeout=5)
        assert heard.is_set()
        assert http.idle == 0


async def test_an_answer_before_the_whole_body_was_sent_closes_the_connection() -> None:
    """A server may answer early (413) without reading the body: the rest of ours is still in
    the socket's buffer, so the connection cannot carry another request."""
    done = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head only
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await done.wait()  # never reads the body

    async with raw_server(script) as url, transport() as http:
        answer = await http.fetch(url, HEADERS, b"z" * (16 * 1024 * 1024), timeout=5,
                                  connect_timeout=5)  # fmt: skip
        assert answer.status == 413
        assert http.idle == 0
        done.set()


async def test_a_stream_read_timeout_bounds_each_wait() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # then silence

    async with raw_server(script) as url, transport() as http:
        stream = await http.open(url, HEADERS, BODY, read_timeout=5, connect_timeout=5)
        chunks = stream.chunks(0.05)
        assert await anext(chunks) == b"hello"
        with pytest.raises(TimeoutError):
            await anext(chunks)
        stream.close()


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise AssertionError("nothing may be sent")  # pragma: no cover

    async with raw_server(script) as url, transport() as http:
        with pytest.raises(ValueError, match="line break"):
            await http.fetch(
                url, {"X-Injected": "a\r\nEvil: 1"}, BODY, timeout=5, connect_timeout=5
            )


@pytest.mark.parametrize("url", ["ftp://example.test/v1", "http:///v1", "http://h:99999/v1"])
async def test_urls_it_cannot_call(url: str) -> None:
    async with transport() as http:
        with pytest.raises(InvalidURLError):
            await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)


async def test_https_verifies_the_certificate() -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"tls": True})

    app = web.Application()
    app.router.add_post("/v1/chat", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/v1/chat"
    try:
        trusting = ssl.create_default_context()
        authority.configure_trust(trusting)
        async with transport(ssl_context=trusting) as http:
            for _ in range(2):
                answer = await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
                assert answer.body == b'{"tls": true}'
            assert http.idle == 1
        async with transport() as http:  # the system's trust store does not know this CA
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await http.fetch(url, HEADERS, BODY, timeout=5, connect_timeout=5)
        assert isinstance(error_for_transport("p", caught.value), NetworkTimeoutError)
    finally:
        await runner.cleanup()


async def test_a_closed_transport_refuses_new_exchanges(upstream: Upstream) -> None:
    async with transport() as http:
        http.close()
        with pytest.raises(RuntimeError, match="closed"):
            await http.fetch(upstream.url + "json", HEADERS, BODY, timeout=5, connect_timeout=5)


def test_headers_repr_shows_names_only() -> None:
    from service.llm.transport import Headers

    headers = Headers([(b"Authorization", b"Bearer sk-secret"), (b"Vary", b"a"), (b"vary", b"b")])
    assert "sk-secret" not in repr(headers)
    assert headers["VARY"] == "a, b"
    assert len(headers) == 2
