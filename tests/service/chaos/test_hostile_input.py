"""Hostile and broken requests, one row each: every one gets a JSON 4xx naming what was
wrong, on a connection of its own; never a 500, a hang, or a text/plain page."""

from __future__ import annotations

import json

import anyio
import pytest

from service.lifecycle import Service

pytestmark = pytest.mark.anyio


def post(body: bytes, *, path: str = "/v1/chat/completions", headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def chat(**fields: object) -> bytes:
    return json.dumps(
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields}
    ).encode()


CHAT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"

ROWS: list[tuple[str, bytes, int, str | None]] = [
    # (row, raw request, status, error code or None when the status says it all)
    (
        "nested 2,000 deep",
        post(b'{"model": "chat", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        400,
        "json_too_deep",
    ),
    ("100,000 unclosed brackets", post(b"[" * 100_000), 400, "json_too_deep"),
    ("deep inside a string is fine", post(chat(user="[" * 5000)), 200, None),
    ("not JSON", post(b"{"), 400, None),
    ("invalid UTF-8", post(b'{"model": "\xff\xfe", "messages": []}'), 400, None),
    ("an array, not an object", post(b"[1, 2]"), 400, None),
    ("NaN", post(b'{"model": "chat", "messages": [], "temperature": NaN}'), 400, None),
    ("messages is a string", post(b'{"model": "chat", "messages": "hi"}'), 400, None),
    ("empty body", post(b""), 400, None),
    ("a model no route serves", post(chat(model="nope\u0000")), 404, None),
    (
        "declared body over the limit",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
        413,
        "body_too_large",
    ),
    ("admin body over 64 KiB", post(b"{}" * 40_000, path="/health"), 413, "body_too_large"),
    (
        "negative Content-Length",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
        "malformed_request",
    ),
    (
        "two Content-Lengths",
        CHAT_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "malformed_request",
    ),
    (
        "Content-Length and chunked",
        CHAT_HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        400,
        "malformed_request",
    ),
    (
        "a broken chunk size",
        CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        None,
    ),
    (
        "a NUL in a header",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        400,
        "malformed_request",
    ),
    (
        "200 headers",
        b"GET /health HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(200))
        + b"\r\n",
        400,
        "malformed_request",
    ),
    ("HTTP/9.9", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400, "malformed_request"),
    ("a path outside the tree", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404, None),
    ("a bad percent escape", b"GET /breakers/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 404, None),
    (
        "PATCH on /health",
        b"PATCH /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        405,
        "method_not_allowed",
    ),
    (
        "admin without a token",
        b"POST /breakers/reset HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        403,
        None,
    ),
]


async def exchange(url: str, data: bytes) -> tuple[int, str, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    async with stream:
        await stream.send(data)
        raw = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in raw:
                raw += await stream.receive()
            head, _, body = raw.partition(b"\r\n\r\n")
            fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
            headers = {name.lower(): value for name, value in fields.items()}
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                body += await stream.receive()
    return int(head.split()[1]), headers.get("content-type", ""), body


@pytest.mark.parametrize(("row", "raw", "status", "code"), ROWS, ids=[row[0] for row in ROWS])
async def test_hostile_requests_get_a_json_4xx(
    service: Service, row: str, raw: bytes, status: int, code: str | None
) -> None:
    got, content_type, body = await exchange(service.url, raw)
    assert content_type.startswith("application/json"), (got, body[:200])
    document = json.loads(body)
    assert got == status, document
    if code is not None:
        assert document["error"]["code"] == code, document
