"""The OpenAI-compatible gateway against the simulator: answers, fallbacks, outages, streams."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest

from service.config import parse_config

from .conftest import TOKEN, Harness, config_text, serving, wait_for

pytestmark = pytest.mark.anyio


async def stream(
    harness: Harness, model: str, **fields: Any
) -> tuple[aiohttp.ClientResponse, list[Any]]:
    """POST a streaming chat; returns the response and its decoded ``data:`` payloads."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with harness.http.post(
        f"{harness.url}/v1/chat/completions", json={**body, **fields}
    ) as response:
        payloads: list[Any] = []
        if response.content_type == "text/event-stream":
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].strip()
                    payloads.append("[DONE]" if data == b"[DONE]" else msgspec.json.decode(data))
        return response, payloads


def text_of(payloads: list[Any]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content", "")
        for p in payloads
        if isinstance(p, dict) and p.get("choices")
    )


async def test_a_completion_from_the_first_provider(harness: Harness) -> None:
    status, body, headers = await harness.chat("chat", "what is a breaker?")
    assert status == 200
    assert headers["X-Breakerd-Provider"] == f"{harness.tag}a"
    assert body["object"] == "chat.completion"
    assert body["model"] == "chat"  # the route's upstream model defaults to its name
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Simulated openai reply to: what is a breaker?"
    assert choice["finish_reason"] == "stop"
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert (await harness.breaker(harness.a))["successful_calls"] == 1


async def test_an_outage_falls_back_then_opens_then_503s_without_fallback(
    harness: Harness,
) -> None:
    harness.simulator.control(api="openai", outage=True)

    for _ in range(2):  # failure_threshold = 2
        status, body, headers = await harness.chat("chat")
        assert status == 200, body
        assert headers["X-Breakerd-Provider"] == f"{harness.tag}b"
        assert body["model"] == "chat"  # the fallback's model-b, renamed to what was asked
        assert body["choices"][0]["message"]["content"].startswith("Simulated anthropic reply")
    assert (await harness.breaker(harness.a))["state"] == "open"
    sent = harness.simulator.apis["openai"].requests

    # Open: the fallback answers and the failing upstream is not even asked.
    status, _, headers = await harness.chat("chat")
    assert (status, headers["X-Breakerd-Provider"]) == (200, f"{harness.tag}b")
    status, body, headers = await harness.chat("solo")
    assert status == 503
    assert body["error"]["code"] == "circuit_open"
    assert harness.a in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 30
    assert harness.simulator.apis["openai"].requests == sent
    assert (await harness.breaker(harness.a))["rejected_calls"] == 2


@pytest.mark.parametrize(
    ("upstream", "status", "code", "counted"),
    [
        (500, 502, "upstream_error", True),
        (503, 502, "upstream_error", True),
        (529, 502, "upstream_error", True),
        (401, 502, "upstream_misconfigured", False),  # our key, not the client's
    ],
)
async def test_upstream_errors_map_to_gateway_statuses(
    harness: Harness, upstream: int, status: int, code: str | None, counted: bool
) -> None:
    harness.simulator.control(api="openai", error_rate=1.0, status=upstream)
    got, body, _ = await harness.chat("solo")
    assert (got, body["error"]["code"]) == (status, code)
    message = body["error"]["message"]
    assert f"upstream '{harness.tag}a'" in message
    assert "simulator" not in message  # the service's own key is never shown
    snapshot = await harness.breaker(harness.a)
    assert snapshot["failed_calls"] == (1 if counted else 0)


@pytest.mark.parametrize("upstream", [400, 404, 422])
async def test_a_providers_4xx_comes_back_as_the_provider_wrote_it(
    harness: Harness, upstream: int
) -> None:
    harness.simulator.control(api="openai", error_rate=1.0, status=upstream)
    got, body, headers = await harness.chat("chat")  # no fallback for the client's mistake
    assert got == upstream
    assert body["error"]["message"].startswith("simulated upstream error")
    assert headers["X-Breakerd-Provider"] == f"{harness.tag}a"
    snapshot = await harness.breaker(harness.a)
    assert (snapshot["failed_calls"], snapshot["ignored_calls"]) == (0, 1)
    assert harness.simulator.apis["anthropic"].requests == 0


async def test_recovery_closes_the_breaker_again(tag: str, http: aiohttp.ClientSession) -> None:
    config = parse_config(config_text(tag, timeout_duration=0.5), environ={})
    async with serving(config) as service:
        harness = Harness(service, tag, http)
        harness.simulator.control(api="openai", outage=True)
        for _ in range(2):
            await harness.chat("solo")
        assert (await harness.breaker(harness.a))["state"] == "open"
        harness.simulator.control(api="openai", outage=False)

        async def half_open() -> bool:
            return bool((await harness.breaker(harness.a))["state"] == "half_open")

        await wait_for(half_open)
        status, _, headers = await harness.chat("solo")
        assert (status, headers["X-Breakerd-Provider"]) == (200, f"{tag}a")
        assert (await harness.breaker(harness.a))["state"] == "closed"


async def test_a_429_cools_the_provider_down_and_never_opens_the_breaker(
    harness: Harness,
) -> None:
    harness.simulator.control(api="openai", error_rate=1.0, status=429, retry_after=7)
    status, body, headers = await harness.chat("solo")  # alone: the provider's 429
    assert (status, headers["Retry-After"]) == (429, "7")
    assert body["error"]["message"].startswith("simulated upstream error")
    sent = harness.simulator.apis["openai"].requests
    for _ in range(2):  # cooling down: the fallback answers, the provider is not asked
        status, _, headers = await harness.chat("chat")
        assert (status, headers["X-Breakerd-Provider"]) == (200, f"{harness.tag}b")
    status, body, headers = await harness.chat("solo")  # nobody else: 429, nothing sent
    assert status == 429
    assert body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(headers["Retry-After"]) <= 7
    assert harness.simulator.apis["openai"].requests == sent
    snapshot = await harness.breaker(harness.a)
    assert (snapshot["state"], snapshot["failed_calls"], snapshot["ignored_calls"]) == (
        "closed",
        0,
        1,
    )
    assert (snapshot["rate_limited"], snapshot["cooldown_skipped"]) == (1, 3)
    assert 0 < snapshot["cooldown_remaining"] <= 7


async def test_an_upstream_timeout_is_a_504(harness: Harness) -> None:
    harness.simulator.control(api="openai", latency=1.0)  # the slow provider's timeout is 0.3 s
    status, body, _ = await harness.chat("slow")
    assert status == 504
    assert body["error"]["code"] == "upstream_timeout"


async def test_a_forced_open_breaker_asks_for_a_minute(harness: Harness) -> None:
    gateway = harness.service.gateway
    assert gateway is not None
    await gateway.routes["solo"].client.force_circuit_open_async()
    status, body, headers = await harness.chat("solo")
    assert (status, body["error"]["code"]) == (503, "circuit_open")
    assert headers["Retry-After"] == "60"  # forced open has no end; not "inf"


async def test_streaming_through_the_gateway(harness: Harness) -> None:
    response, payloads = await stream(harness, "chat")
    assert response.status == 200
    assert response.headers["X-Breakerd-Provider"] == f"{harness.tag}a"
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert text_of(payloads) == "Simulated openai reply to: hi"


async def test_streaming_with_usage(harness: Harness) -> None:
    _, payloads = await stream(harness, "solo", stream_options={"include_usage": True})
    usage_chunk = payloads[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0


async def test_streaming_through_an_outage(harness: Harness) -> None:
    harness.simulator.control(api="openai", outage=True)
    for _ in range(2):
        response, payloads = await stream(harness, "chat")
        assert response.headers["X-Breakerd-Provider"] == f"{harness.tag}b"
        assert text_of(payloads) == "Simulated anthropic reply to: hi"
    assert (await harness.breaker(harness.a))["state"] == "open"

    # No fallback: the error comes before any byte of the stream, with its real status.
    response, payloads = await stream(harness, "solo")
    assert response.status == 503
    assert response.content_type == "application/json"
    assert "Retry-After" in response.headers


async def test_a_stream_that_breaks_after_it_started_ends_with_an_error_event(
    harness: Harness,
) -> None:
    harness.simulator.control(api="openai", truncate_streams=True)
    response, payloads = await stream(harness, "solo")
    assert response.status == 200  # committed with the first delta
    assert "[DONE]" not in payloads
    error = payloads[-1]["error"]
    assert error["code"] == "upstream_error"
    assert "end marker" in error["message"]
    assert text_of(payloads).startswith("Simulated")
    assert (await harness.breaker(harness.a))["failed_calls"] == 1


async def test_an_open_route_says_when_its_soonest_provider_probes_and_not_to_retry(
    harness: Harness,
) -> None:
    """Issue 12: Retry-After is the soonest probe across the chain, not the last provider's."""
    status, _, _ = await harness.request("POST", f"/breakers/{harness.b}/open", token=TOKEN)
    assert status == 200  # the fallback is held open: its own retry time is "forever" (60)
    harness.simulator.control(api="openai", outage=True)
    for _ in range(2):  # failure_threshold = 2: the primary opens for 30 s
        await harness.chat("chat")
    assert (await harness.breaker(harness.a))["state"] == "open"
    status, body, headers = await harness.chat("chat")
    assert (status, body["error"]["code"]) == (503, "circuit_open")
    assert headers["x-should-retry"] == "false"
    assert 1 <= int(headers["Retry-After"]) <= 30  # the primary's probe, not the forced 60
