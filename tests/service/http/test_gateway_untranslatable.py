"""An answer that is valid in the provider's format but that the client's format cannot carry is
the translation's limit, not the provider's fault: the client gets an error naming the field,
and the provider's breaker counts nothing.

The upstream is a real aiohttp server on 127.0.0.1 that answers ``/v1/messages`` clients (through
the gateway's Chat Completions translation) with what Anthropic's format cannot express: tool
arguments that are not a JSON object, and a stream interleaving two tool calls' arguments
(Anthropic cannot reopen a closed content block).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from service.config import parse_config
from service.lifecycle import Service

from .conftest import serving

pytestmark = pytest.mark.anyio

TOOLS = [
    {
        "name": "lookup",
        "description": "Look something up.",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]


def _call(index: int, ident: str | None, arguments: str) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if ident is not None:
        call.update(id=ident, type="function")
        call["function"]["name"] = "lookup"
    return call


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


# Call 0 opens, call 1 opens, then call 0 goes on: its block was closed when call 1 began.
INTERLEAVED = [
    _chunk({"role": "assistant", "content": None}),
    _chunk({"tool_calls": [_call(0, "call_a", '{"q": "')]}),
    _chunk({"tool_calls": [_call(1, "call_b", '{"q": "')]}),
    _chunk({"tool_calls": [_call(0, None, 'x"}')]}),
    _chunk({"tool_calls": [_call(1, None, 'y"}')]}),
    _chunk({}, "tool_calls"),
    b"data: [DONE]\n\n",
]

NOT_AN_OBJECT = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1,
    "model": "up-model",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": "[1, 2]"},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
}


async def _completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(NOT_AN_OBJECT)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in INTERLEAVED:
        await response.write(event)
    await response.write_eof()
    return response


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.fixture
async def service(tag: str, upstream: str) -> AsyncIterator[Service]:
    config = parse_config(
        f"""
[service]
port = 0

[providers.{tag}up]
kind = "openai"
model = "up-model"
base_url = "{upstream}"
api_key_env = "FAKE_KEY"

[routes.up]
provider = "{tag}up"

[simulator]
mode = "off"
""",
        environ={},
    )
    async with serving(config, {"FAKE_KEY": "sk-fake-key-for-tests"}) as running:
        yield running


async def counted(http: aiohttp.ClientSession, service: Service, name: str) -> tuple[int, str]:
    async with http.get(f"{service.url}/breakers/{name}") as response:
        snapshot = await response.json()
    return snapshot["failed_calls"], snapshot["state"]


async def test_tool_arguments_that_are_not_an_object_are_a_400_naming_them(
    service: Service, tag: str, http: aiohttp.ClientSession
) -> None:
    body = {"model": "up", "max_tokens": 50, "tools": TOOLS, "messages": [
        {"role": "user", "content": "look"}
    ]}  # fmt: skip
    async with http.post(f"{service.url}/v1/messages", json=body) as response:
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["type"] == "error"
    assert "arguments" in answer["error"]["message"]
    assert await counted(http, service, f"{tag}up_client") == (0, "closed")


async def test_an_interleaved_tool_call_stream_ends_with_an_error_event_and_no_failure(
    service: Service, tag: str, http: aiohttp.ClientSession
) -> None:
    body = {"model": "up", "max_tokens": 50, "stream": True, "tools": TOOLS, "messages": [
        {"role": "user", "content": "look"}
    ]}  # fmt: skip
    async with http.post(f"{service.url}/v1/messages", json=body) as response:
        text = (await response.read()).decode()
    assert response.status == 200  # the stream had begun: the error comes as its last event
    assert "event: error" in text
    assert "cannot be expressed" in text
    assert "message_stop" not in text
    assert await counted(http, service, f"{tag}up_client") == (0, "closed")
