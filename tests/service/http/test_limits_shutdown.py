"""Shutdown cuts what is still running with a clean answer: a 503 JSON error for a request, an
SSE error event for a stream already under way; at the grace period, or at once on a second
SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

from service.circuit_breaker import remove_circuit_breaker
from service.config import parse_config

from .conftest import serving, wait_for

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}
    ],
}


@pytest.fixture(autouse=True)
def forget_breakers(tag: str) -> Iterator[None]:
    yield
    remove_circuit_breaker(f"{tag}h_client")  # the registry is process-wide


@asynccontextmanager
async def hanging_upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """An OpenAI-compatible upstream that never finishes: a completion never answers, a
    stream sends its first chunk and then nothing.  Yields its URL and what it received."""
    received: list[str] = []
    release = anyio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        stream = bool((await request.json()).get("stream"))
        received.append("stream" if stream else "complete")
        if not stream:
            await release.wait()
            return web.json_response({})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + json.dumps(CHUNK).encode() + b"\n\n")
        await release.wait()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", received
    finally:
        release.set()
        await runner.cleanup()


def hanging_config(tag: str, upstream: str, grace: float) -> str:
    return f"""
[service]
port = 0
shutdown_grace = {grace}

[providers.{tag}h]
kind = "openai_compatible"
model = "m"
base_url = "{upstream}/v1"
timeout = 3.0  # bounds any wait on the hanging upstream

[routes.hang]
provider = "{tag}h"

[simulator]
mode = "off"
"""


BODY = {"model": "hang", "messages": [{"role": "user", "content": "hi"}]}


async def test_at_the_grace_period_requests_get_503_and_streams_an_error_event(
    tag: str, http: aiohttp.ClientSession
) -> None:
    answers: list[tuple[int, str]] = []
    streamed: list[bytes] = []
    first_chunk = anyio.Event()

    async def complete(url: str) -> None:
        async with http.post(f"{url}/v1/chat/completions", json=BODY) as response:
            answers.append((response.status, (await response.json())["error"]["code"]))

    async def stream(url: str) -> None:
        async with http.post(
            f"{url}/v1/chat/completions", json={**BODY, "stream": True}
        ) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                streamed.append(chunk)
                first_chunk.set()

    async with hanging_upstream() as (upstream, received):
        config = parse_config(hanging_config(tag, upstream, grace=0.3), environ={})
        with anyio.fail_after(15):
            async with serving(config) as service, anyio.create_task_group() as clients:
                clients.start_soon(complete, service.url)
                clients.start_soon(complete, service.url)
                clients.start_soon(stream, service.url)
                await wait_for(lambda: len(received) == 3)
                await first_chunk.wait()
                service.stop()
    assert answers == [(503, "shutting_down")] * 2
    text = b"".join(streamed).decode()
    assert text.startswith("data: ")  # the chunk the upstream sent came through first
    event = text.rstrip("\n").rsplit("\n\n", 1)[-1]
    assert event.startswith("event: error\ndata: ")
    error = json.loads(event.split("data: ", 1)[1])
    assert error["type"] == "error"
    assert error["error"]["code"] == "shutting_down"


def clean_environment() -> dict[str, str]:
    drop = ("BREAKERD_", "OTEL_", "OPENAI_", "ANTHROPIC_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


async def test_a_second_sigterm_answers_in_flight_requests_503_at_once(
    tag: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with hanging_upstream() as (upstream, received):
        config = tmp_path / "hang.toml"
        config.write_text(hanging_config(tag, upstream, grace=60))
        log: list[str] = []
        listening, stopping = anyio.Event(), anyio.Event()
        with anyio.fail_after(30):
            process = await anyio.open_process(
                [sys.executable, "-m", "service", "--config", str(config)],
                cwd=ROOT,
                env=clean_environment(),
            )
            async with process, anyio.create_task_group() as tasks:

                async def read_log() -> None:
                    assert process.stderr is not None
                    buffered = ""
                    async for chunk in process.stderr:
                        buffered += chunk.decode()
                        *lines, buffered = buffered.split("\n")
                        log.extend(lines)
                        text = "\n".join(lines)
                        if "listening on" in text:
                            listening.set()
                        if "shutting down:" in text:
                            stopping.set()

                tasks.start_soon(read_log)
                await listening.wait()
                found = re.search(r"listening on (http://\S+)", "\n".join(log))
                assert found is not None
                url = found.group(1)
                answer: list[tuple[int, str]] = []

                async def complete() -> None:
                    async with http.post(f"{url}/v1/chat/completions", json=BODY) as response:
                        answer.append((response.status, (await response.json())["error"]["code"]))

                async with anyio.create_task_group() as clients:
                    clients.start_soon(complete)
                    await wait_for(lambda: len(received) == 1)
                    process.send_signal(signal.SIGTERM)
                    await stopping.wait()
                    with anyio.fail_after(5):  # far below the 60 s grace period
                        process.send_signal(signal.SIGTERM)
                        await wait_for(lambda: bool(answer))
                assert answer == [(503, "shutting_down")]
                assert await process.wait() == 0
    text = "\n".join(log)
    assert "received again: cutting in-flight requests now" in text
    assert "Traceback" not in text
    assert "Session is closed" not in text
