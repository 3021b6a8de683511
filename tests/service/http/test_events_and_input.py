"""``GET /events`` shows transitions live; bad input gets a 4xx JSON error, never a crash."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from service.config import parse_config

from .conftest import TOKEN, Harness, config_text, serving

pytestmark = pytest.mark.anyio


class EventReader:
    """Reads ``event:``/``data:`` pairs from an SSE response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str, Any]:
        kind = ""
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                return kind, msgspec.json.decode(line[6:])
        raise EOFError("the stream ended")

    async def next_change(self, breaker: str) -> dict[str, Any]:
        """The next state change of ``breaker`` (other tests' breakers share the bus)."""
        while True:
            kind, data = await self.next()
            if kind == "state_changed" and data["breaker"] == breaker:
                return dict(data)


async def test_events_stream_shows_an_open_and_a_close(harness: Harness) -> None:
    with anyio.fail_after(10):
        async with harness.http.get(f"{harness.url}/events") as response:
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            reader = EventReader(response)
            kind, data = await reader.next()  # subscribed once the first snapshot is out
            assert kind == "metrics"
            assert data["breakers"][harness.a]["state"] == "closed"

            harness.simulator.control(api="openai", outage=True)
            for _ in range(2):
                await harness.chat("chat")
            opened = await reader.next_change(harness.a)
            assert (opened["from_state"], opened["to_state"]) == ("closed", "open")
            assert opened["reason"] == "failure_threshold"
            assert opened["consecutive_failures"] == 2

            await harness.request("POST", f"/breakers/{harness.a}/reset", token=TOKEN)
            closed = await reader.next_change(harness.a)
            assert (closed["from_state"], closed["to_state"], closed["reason"]) == (
                "open",
                "closed",
                "reset",
            )
            assert closed["at"] >= opened["at"]


async def test_events_stream_sends_periodic_metrics(harness: Harness) -> None:
    with anyio.fail_after(10):
        async with harness.http.get(f"{harness.url}/events") as response:
            reader = EventReader(response)
            await reader.next()
            await harness.chat("solo")
            while True:  # events_interval is 0.5 s in the test config
                kind, data = await reader.next()
                if kind == "metrics" and data["breakers"][harness.a]["successful_calls"] == 1:
                    break


async def test_shutdown_ends_open_event_streams(tag: str, http: aiohttp.ClientSession) -> None:
    config = parse_config(config_text(tag), environ={})
    with anyio.fail_after(10):
        async with serving(config) as service:
            response = await http.get(f"{service.url}/events")
            reader = EventReader(response)
            await reader.next()
            service.stop()
        with pytest.raises(EOFError):  # ended cleanly, without waiting for the grace period
            while True:
                await reader.next()
        response.release()


BAD_INPUTS = [
    (b"{not json", 400, "request body is not valid JSON"),
    (b"", 400, "request body is empty"),
    (b"[1, 2]", 400, "Expected `object`, got `array`"),
    # The gateway checks only what it needs; everything else is the provider's to judge.
    (b'{"model": "chat"}', 400, "messages: required"),
    (b'{"model": "chat", "messages": "hi"}', 400, "messages: expected an array"),
    (b'{"messages": []}', 400, "model: required"),
    (b'{"model": 5, "messages": []}', 400, "model: expected a string"),
    (b'{"model": "", "messages": []}', 400, "model: expected a non-empty string"),
    (b'{"model": "chat", "messages": [], "stream": "yes"}', 400, "stream: expected a boolean"),
    (
        b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "model 'nope' has no route; configured models: chat, slow, solo",
    ),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD_INPUTS)
async def test_bad_chat_requests(harness: Harness, body: bytes, status: int, fragment: str) -> None:
    got, answer, _ = await harness.request(
        "POST", "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    assert got == status
    assert fragment in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"
    assert harness.simulator.apis["openai"].requests == 0  # nothing reached an upstream


async def test_oversized_bodies_are_refused(tag: str, http: aiohttp.ClientSession) -> None:
    config = parse_config(config_text(tag, service="max_body_bytes = 2048"), environ={})
    async with serving(config) as service:
        harness = Harness(service, tag, http)
        status, body, _ = await harness.chat("chat", "x" * 4096)
        assert status == 413
        assert body["error"]["message"] == (
            "request body too large: the limit is 2048 bytes (service.max_body_bytes)"
        )
        status, _, _ = await harness.chat("chat", "x" * 100)
        assert status == 200  # and the server is fine


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/nowhere", 404, "no such endpoint"),
        ("GET", "/v1/chat/completions", 405, "method GET is not allowed here; allowed: POST"),
        ("DELETE", "/breakers", 405, "allowed: GET, HEAD"),
        ("PUT", "/breakers/x/open", 405, "allowed: POST"),
        ("POST", "/breakers/x/explode", 404, "no such endpoint"),
    ],
)
async def test_unknown_routes_and_methods(
    harness: Harness, method: str, path: str, status: int, fragment: str
) -> None:
    got, body, headers = await harness.request(method, path, token=TOKEN)
    assert got == status
    assert fragment in body["error"]["message"]
    if status == 405:
        assert headers["Allow"]


async def test_errors_never_show_internals(harness: Harness) -> None:
    for body in (b"\xff\xfe", b'{"model": "chat", "messages": {}}', b"null"):
        status, answer, _ = await harness.request("POST", "/v1/chat/completions", data=body)
        assert 400 <= status < 500
        assert "Traceback" not in str(answer)
        assert set(answer) == {"error"}
    status, _, _ = await harness.request("GET", "/health")
    assert status in (200, 503)  # still serving
