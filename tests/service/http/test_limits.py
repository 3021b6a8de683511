"""The server's edges under hostile clients: slow heads, too many connections, malformed
requests, deep or large bodies; and the cut of in-flight requests at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from service.config import parse_config
from service.server import Throttled

from .conftest import TOKEN, config_text, serving, wait_for

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


# -- raw HTTP, for what a well-behaved client would never send ------------------------------------


async def exchange(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a fresh connection and read the answer until the server closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        with anyio.fail_after(10):
            raw = await reader.read(-1)
    finally:
        writer.close()
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def error_code(headers: dict[str, str], body: bytes) -> str:
    assert headers["content-type"].startswith("application/json"), body
    return str(json.loads(body)["error"]["code"])


# -- slow clients and the connection cap --------------------------------------------------------


async def test_a_slow_header_flood_is_closed_while_health_keeps_answering(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag, service="header_timeout = 0.5"), environ={})
    flood = 300
    async with serving(config) as service:
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        closed_after: list[float] = []
        connected: list[asyncio.StreamWriter] = []
        answers: list[bytes] = []

        async def dribble() -> None:
            reader, writer = await asyncio.open_connection(host, int(port))
            connected.append(writer)
            started = time.monotonic()
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            received = b""
            try:
                with anyio.fail_after(5):  # a guard: the server must close well before
                    while not reader.at_eof():
                        with anyio.move_on_after(0.1):
                            received += await reader.read(4096)
                        if not reader.at_eof():
                            writer.write(b"a")  # one header byte every 0.1 s, never the end
            except ConnectionError:
                pass  # closed by the server between two bytes
            finally:
                writer.close()
            closed_after.append(time.monotonic() - started)
            answers.append(received)

        async def probe_health() -> None:
            for _ in range(5):
                started = time.monotonic()
                async with http.get(f"{service.url}/health") as response:
                    assert response.status == 200
                assert time.monotonic() - started < 1.0
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as clients:
            for _ in range(flood):
                clients.start_soon(dribble)
            await wait_for(lambda: len(connected) == flood)
            await probe_health()
        assert len(closed_after) == flood
        assert max(closed_after) < 3.0
        for raw in answers:
            status, headers, body = parse_response(raw)
            assert (status, error_code(headers, body)) == (408, "header_timeout")
        assert service.edge is not None
        assert service.edge.statistics()["header_timeouts"] >= flood


async def test_a_slow_second_head_on_a_kept_alive_connection_gets_408(tag: str) -> None:
    """The head deadline also runs between requests: it starts with the next head's first
    bytes (here: a whole request first, then half a head)."""
    config = parse_config(config_text(tag, service="header_timeout = 0.3"), environ={})
    async with serving(config) as service:
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            with anyio.fail_after(5):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(parse_response(head)[1]["content-length"])
                await reader.readexactly(length)
                writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                raw = await reader.read(-1)  # until the server closes
        finally:
            writer.close()
        status, headers, body = parse_response(raw)
        assert (status, error_code(headers, body)) == (408, "header_timeout")
        assert service.edge is not None
        assert service.edge.statistics()["header_timeouts"] == 1


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(tag: str) -> None:
    config = parse_config(config_text(tag, service="header_timeout = 0.3"), environ={})
    async with serving(config) as service:
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        with anyio.fail_after(5):
            assert await reader.read() == b""  # closed, and no stray 408 for a pool to misread
        writer.close()
        assert service.edge is not None
        assert service.edge.statistics()["header_timeouts"] == 1


async def test_connections_beyond_the_cap_are_answered_503_and_closed(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag, service="max_connections = 3"), environ={})
    async with serving(config) as service:
        edge = service.edge
        assert edge is not None
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        await wait_for(lambda: edge.open_connections == 3)
        status, headers, body = await exchange(
            service.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert (status, error_code(headers, body)) == (503, "too_many_connections")
        assert headers["retry-after"] == "1"
        assert edge.statistics()["refused_connections"] == 1
        for _, writer in idle:
            writer.close()
        await wait_for(lambda: edge.open_connections == 0)
        async with http.get(f"{service.url}/health") as response:
            assert response.status == 200


async def test_failed_accepts_are_logged_once_per_interval_with_a_count(
    tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(config_text(tag), environ={})
    async with serving(config) as service:
        loop = asyncio.get_running_loop()
        for _ in range(500):  # what asyncio reports when accept() finds no descriptor left
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                }
            )
        assert service.edge is not None
        assert service.edge.statistics()["accept_errors"] == 500
    lines = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
    assert lines == ["cannot accept connections: Too many open files"]


async def test_out_of_descriptors_accept_errors_are_logged_once_and_the_service_recovers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # A real process with few descriptors, so that accept() itself fails (EMFILE).
    config = tmp_path / "fds.toml"
    config.write_text(config_text("fd") + "\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BREAKERD_", "OPENAI_"))}
    command = 'ulimit -n 80 && exec "$0" -m service --config "$1"'
    log: list[str] = []
    listening = anyio.Event()
    with anyio.fail_after(60):
        process = await anyio.open_process(
            ["sh", "-c", command, sys.executable, str(config)], cwd=ROOT, env=environ
        )
        async with process, anyio.create_task_group() as tasks:

            async def read_log() -> None:
                assert process.stderr is not None
                buffered = ""
                async for chunk in process.stderr:
                    buffered += chunk.decode()
                    *lines, buffered = buffered.split("\n")
                    log.extend(lines)
                    if any("listening on" in line for line in lines):
                        listening.set()

            tasks.start_soon(read_log)
            await listening.wait()
            found = re.search(r"listening on (http://\S+)", "\n".join(log))
            assert found is not None
            url = found.group(1)
            host, port = url.removeprefix("http://").rsplit(":", 1)
            flood = [await asyncio.open_connection(host, int(port)) for _ in range(120)]
            await wait_for(lambda: any("cannot accept" in line for line in log))
            await anyio.sleep(2.5)  # asyncio retries accept() every second meanwhile
            for _, writer in flood:
                writer.close()

            async def healthy() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/health") as response:
                        return response.status == 200
                return False

            await wait_for(healthy)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    text = "\n".join(log)
    assert "exceeds the open-file limit (80)" in text
    assert [line for line in log if "cannot accept" in line] == [
        next(line for line in log if "cannot accept connections: Too many open files" in line)
    ]
    assert "Traceback" not in text


def test_a_throttled_line_reports_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    line = Throttled(logging.WARNING, "refused %s", interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="service.server"):
        for step in range(30):  # one a second for 30 s: lines at 0, 10 and 20 s
            now[0] = float(step)
            line(step)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 10 (9 more like it in the last 10s)",
        "refused 20 (9 more like it in the last 10s)",
    ]


# -- malformed requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="long-url"),
        pytest.param(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n",
            id="long-header",
        ),
        pytest.param(b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-hello"),
    ],
)
async def test_requests_aiohttp_cannot_parse_get_the_services_json_400(
    tag: str, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    config = parse_config(config_text(tag), environ={})
    async with serving(config) as service:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            status, headers, body = await exchange(service.url, request_bytes)
        logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert (status, error_code(headers, body)) == (400, "malformed_request")
    message = json.loads(body)["error"]["message"]
    assert message.startswith("malformed request: ")
    assert [level for _, level, _ in logged] == [logging.INFO], logged
    assert logged[0][2].startswith("refused a malformed request from 127.0.0.1: ")
    for text in (message, logged[0][2]):  # the client's bytes are not echoed
        assert "aaaa" not in text and "bbbb" not in text and "G(T" not in text
    assert "Traceback" not in caplog.text


# -- bodies --------------------------------------------------------------------------------


def chat_body(content: Any) -> dict[str, Any]:
    return {"model": "solo", "messages": [{"role": "user", "content": content}]}


async def test_a_body_nested_2000_levels_deep_answers_400(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag), environ={})
    deep = b'{"model": "solo", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    async with serving(config) as service:
        async with http.post(f"{service.url}/v1/chat/completions", data=deep) as response:
            body = await response.json()
            assert response.status == 400, body
        assert body["error"]["code"] == "json_too_deep"
        assert "deeper than 128 levels (service.max_json_depth)" in body["error"]["message"]


# aiohttp's client advises (ResourceWarning) against sending large bytes bodies; the gateway
# forwards the body as bytes, and pytest makes every warning an error.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_a_multimodal_body_over_a_mebibyte_is_served(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag), environ={})
    image = "data:image/png;base64," + "A" * 1_300_000
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    body = io.BytesIO(json.dumps(chat_body(content)).encode())  # 1.3 MB, streamed
    async with (
        serving(config) as service,
        http.post(
            f"{service.url}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.mark.parametrize("chunked", [False, True])
async def test_bodies_over_the_route_limit_answer_413_naming_the_setting(
    tag: str, http: aiohttp.ClientSession, chunked: bool
) -> None:
    config = parse_config(
        config_text(tag, service="max_body_bytes = 4096\nmax_admin_body_bytes = 512"),
        environ={},
    )

    async def body(size: int) -> AsyncIterator[bytes]:
        yield b"x" * size

    admin = {"Authorization": f"Bearer {TOKEN}"}  # admin bodies are read after the token check
    async with serving(config, {"BREAKERD_ADMIN_TOKEN": TOKEN}) as service:
        for path, limit, setting in (
            ("/v1/chat/completions", 4096, "service.max_body_bytes"),
            ("/breakers/reset", 512, "service.max_admin_body_bytes"),
        ):
            data: Any = body(limit + 1) if chunked else b"x" * (limit + 1)
            async with http.post(f"{service.url}{path}", data=data, headers=admin) as response:
                answer = await response.json()
                assert response.status == 413, answer
            assert answer["error"]["message"] == (
                f"request body too large: the limit is {limit} bytes ({setting})"
            )


async def test_a_body_that_does_not_arrive_in_time_answers_408(tag: str) -> None:
    config = parse_config(config_text(tag, service="body_timeout = 0.3"), environ={})
    async with serving(config) as service:
        started = time.monotonic()
        status, headers, body = await exchange(
            service.url,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        )
        assert (status, error_code(headers, body)) == (408, "body_timeout")
        assert time.monotonic() - started < 5
