"""The upstream simulator speaks both wire formats and injects the faults it is told to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from service.simulator import Simulator

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
MESSAGES = {**CHAT, "max_tokens": 64}  # the Messages format requires max_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:  # shadows the ManualClock fixture: the simulator takes a plain callable
    return Clock()


@pytest.fixture
async def simulator(clock: Clock) -> AsyncIterator[Simulator]:
    async with Simulator(clock=clock, seed=1) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json(), response.headers


async def events(http: aiohttp.ClientSession, url: str, body: Any) -> list[bytes]:
    async with http.post(url, json={**body, "stream": True}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        return [line async for line in response.content if line.startswith(b"data: ")]


async def test_openai_format(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, f"{simulator.openai_base_url}/chat/completions", CHAT)
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Simulated openai reply to: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] > 0


async def test_anthropic_format(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, f"{simulator.anthropic_base_url}/v1/messages", MESSAGES)
    assert status == 200
    assert body["type"] == "message"
    assert body["content"] == [
        {"type": "text", "text": "Simulated anthropic reply to: hello there"}
    ]
    assert body["stop_reason"] == "end_turn"


async def test_openai_stream(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    lines = await events(http, f"{simulator.openai_base_url}/chat/completions", CHAT)
    assert lines[-1].strip() == b"data: [DONE]"
    chunks = [msgspec.json.decode(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Simulated openai reply to: hello there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_stream(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    lines = await events(http, f"{simulator.url}/v1/messages", MESSAGES)
    payloads = [msgspec.json.decode(line[6:]) for line in lines]
    assert payloads[0]["type"] == "message_start"
    assert payloads[-1]["type"] == "message_stop"
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == "Simulated anthropic reply to: hello there"


async def test_an_outage_with_a_duration_ends_by_itself(
    simulator: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    status, state, _ = await post(
        http, f"{simulator.url}/_control", {"api": "openai", "outage": True, "duration": 20}
    )
    assert status == 200
    assert state["openai"]["outage"] is True
    assert state["openai"]["temporary_for"] == 20
    assert state["anthropic"]["outage"] is False

    url = f"{simulator.openai_base_url}/chat/completions"
    status, body, _ = await post(http, url, CHAT)
    assert status == 503
    assert body["error"]["type"] == "server_error"
    status, _, _ = await post(http, f"{simulator.url}/v1/messages", MESSAGES)
    assert status == 200  # the other wire format is untouched

    clock.now += 20
    status, _, _ = await post(http, url, CHAT)
    assert status == 200
    assert simulator.describe()["openai"]["outage"] is False
    assert (simulator.apis["openai"].requests, simulator.apis["openai"].failed) == (2, 1)


async def test_rate_limits_carry_retry_after(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.control(api="anthropic", error_rate=1.0, status=429, retry_after=7)
    status, body, headers = await post(http, f"{simulator.url}/v1/messages", MESSAGES)
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "simulated upstream error (HTTP 429)"},
    }
    simulator.control(api="anthropic", status=529)
    status, body, _ = await post(http, f"{simulator.url}/v1/messages", MESSAGES)
    assert (status, body["error"]["type"]) == (529, "overloaded_error")


async def test_error_rate_fails_a_share_of_calls(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.control(error_rate=0.5)
    url = f"{simulator.openai_base_url}/chat/completions"
    statuses = [(await post(http, url, CHAT))[0] for _ in range(40)]
    assert set(statuses) == {200, 503}
    assert simulator.apis["openai"].failed == statuses.count(503)


async def test_reset_clears_faults(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    simulator.control(outage=True, latency=3)
    status, state, _ = await post(http, f"{simulator.url}/_control", {"reset": True})
    assert status == 200
    assert state["openai"]["outage"] is False
    assert state["openai"]["latency"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"outage": "yes"}, "Expected `bool`, got `str` - at `$.outage`"),
        ({"error_rate": 2}, "Expected `float` <= 1"),
        ({"status": 200}, "Expected `int` >= 400"),
        ({"api": "azure"}, "Invalid enum value 'azure'"),
        ({"outgae": True}, "unknown field `outgae`"),
    ],
)
async def test_bad_control_requests_are_refused(
    simulator: Simulator, http: aiohttp.ClientSession, body: Any, fragment: str
) -> None:
    status, answer, _ = await post(http, f"{simulator.url}/_control", body)
    assert status == 400
    assert fragment in answer["error"]
    assert simulator.describe()["openai"]["outage"] is False


async def test_get_control_reports_counts(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    await post(http, f"{simulator.openai_base_url}/chat/completions", CHAT)
    async with http.get(f"{simulator.url}/_control") as response:
        state = await response.json()
    assert state["openai"]["requests"] == 1
    assert state["openai"]["in_flight"] == 0


async def test_a_bad_request_body_gets_the_providers_400(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, f"{simulator.url}/v1/messages", {"messages": 3})
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
