"""The library with tools (both wire formats, against the simulator), and the limits around a
call: rate-limit cooldowns, connection slots, connection reuse, odd client errors."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from actors import ActorSystem, ManualClock
from service.llm.cooldown import MAX_COOLDOWN
from service.llm.errors import MAX_RETRY_AFTER
from service.llm_client import (
    CircuitOpenAPIError,
    ProviderSaturatedError,
    RateLimitError,
    ServiceUnavailableError,
    ToolCallDelta,
    get_llm_client,
)
from service.simulator import Simulator
from tests.service.http.conftest import wait_for
from tests.service.llm.fake_provider import FakeProvider, Fault
from tests.service.llm.helpers import HELLO, KEY, WIRES, backup_entry, client_for

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Rome?"}]


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(latency=0.0) as server:
        yield server


def sim_client(simulator: Simulator, wire: str, system: ActorSystem, **options: Any) -> Any:
    api = "anthropic" if wire == "anthropic" else "openai"
    return get_llm_client(
        wire, api_key=KEY, base_url=simulator.base_url(api), system=system, **options
    )


# -- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_a_tool_call_round_trip(simulator: Simulator, system: ActorSystem, wire: str) -> None:
    async with sim_client(simulator, wire, system, model="m") as client:
        first = await client.complete_async(ASK, tools=[WEATHER], tool_choice="required")
        assert first.finish_reason == "tool_calls"
        (call,) = first.tool_calls
        assert call.function.name == "weather"
        assert isinstance(json.loads(call.function.arguments)["city"], str)
        turn = {"role": "assistant", "content": first.content, "tool_calls": [
            {"id": call.id, "type": "function", "function": {
                "name": "weather", "arguments": call.function.arguments}}]}  # fmt: skip
        result = {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}
        second = await client.complete_async([*ASK, turn, result], tools=[WEATHER])
    assert second.finish_reason == "stop"
    assert second.tool_calls == ()
    assert "sunny, 24 C" in (second.content or "")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_streamed_tool_call_comes_as_deltas_and_is_assembled(
    simulator: Simulator, system: ActorSystem, wire: str
) -> None:
    async with sim_client(simulator, wire, system, model="m") as client:
        stream = client.stream_async(ASK, tools=[WEATHER], tool_choice="required")
        deltas = [delta async for delta in stream]
    pieces = [delta for delta in deltas if isinstance(delta, ToolCallDelta)]
    assert pieces[0].index == 0 and pieces[0].name == "weather" and pieces[0].id
    assert all(piece.id is None for piece in pieces[1:])  # the id comes first, once
    (call,) = stream.tool_calls
    assert call.id == pieces[0].id
    assert call.function.arguments == "".join(piece.arguments for piece in pieces)
    assert json.loads(call.function.arguments)["city"]
    response = stream.response()
    assert (response.finish_reason, response.tool_calls) == ("tool_calls", stream.tool_calls)


async def test_structured_output_from_an_anthropic_provider_is_the_content(
    simulator: Simulator, system: ActorSystem
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    async with sim_client(simulator, "anthropic", system, model="m") as client:
        answer = await client.complete_async(ASK, response_format=response_format)
    assert answer.finish_reason == "stop"
    assert answer.tool_calls == ()
    assert isinstance(json.loads(answer.content or "")["city"], str)


async def test_every_parameter_reaches_an_openai_provider_untouched(
    simulator: Simulator, system: ActorSystem
) -> None:
    params = {
        "max_completion_tokens": 50,
        "seed": 7,
        "logprobs": True,
        "a_parameter_from_next_year": {"nested": [1, 2]},
    }
    async with sim_client(simulator, "openai", system, model="m") as client:
        await client.complete_async(ASK, **params)
    (body,) = simulator.bodies("openai")
    assert {name: body[name] for name in params} == params


async def test_a_parameter_anthropic_cannot_take_is_refused_by_name(
    simulator: Simulator, system: ActorSystem
) -> None:
    from service.llm_client import InvalidRequestError

    async with sim_client(simulator, "anthropic", system, model="m") as client:
        with pytest.raises(InvalidRequestError, match="logprobs") as caught:
            await client.complete_async(ASK, logprobs=True)
    assert caught.value.provider == "anthropic"
    assert simulator.bodies("anthropic") == []


# -- rate limits: cooldowns ------------------------------------------------------------------------


async def test_a_429_cools_the_provider_down_and_the_chain_skips_it_until_then(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    fake.inject(Fault.status_code(429, retry_after="3"))
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        for _ in range(3):
            answer = await client.complete_async(HELLO)
            assert answer.provider == "anthropic"
        assert (fake.count, backup.count) == (1, 3)  # asked once, then skipped
        metrics = await client.get_circuit_breaker_metrics_async()
        clock.advance(3.0)
        assert (await client.complete_async(HELLO)).provider == "openai"
    assert metrics is not None
    assert metrics["state"] == "closed"
    assert (metrics["rate_limited"], metrics["cooldown_skipped"]) == (1, 2)
    assert metrics["cooldown_remaining"] == pytest.approx(3.0)
    # The 429 is an ignored call; skipped calls never reached the breaker.
    assert (metrics["total_calls"], metrics["ignored_calls"]) == (1, 1)


async def test_when_every_provider_cools_down_the_soonest_retry_after_is_raised(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(429, retry_after="9"))
    backup.inject(Fault.status_code(429, retry_after="4"))
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.complete_async(HELLO)
        assert caught.value.retry_after == 4.0
        with pytest.raises(RateLimitError) as again:  # both still cool: nothing is sent
            await client.complete_async(HELLO)
    assert (again.value.provider, again.value.retry_after) == ("anthropic", pytest.approx(4.0))
    assert (fake.count, backup.count) == (1, 1)


async def test_fallback_on_rate_limit_false_raises_the_429_at_once(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(429, retry_after="2"))
    chain = [backup_entry(backup)]
    async with client_for(
        "openai", fake, system, fallback_providers=chain, fallback_on_rate_limit=False
    ) as client:
        with pytest.raises(RateLimitError):
            await client.complete_async(HELLO)
    assert backup.count == 0


async def test_a_huge_retry_after_is_clamped(
    fake: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    fake.inject(Fault.status_code(429, retry_after="1e308"))
    async with client_for("openai", fake, system) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.complete_async(HELLO)
        clock.advance(MAX_COOLDOWN)  # and the cooldown is capped: the provider is back
        assert (await client.complete_async(HELLO)).provider == "openai"
    assert caught.value.retry_after == MAX_RETRY_AFTER


async def test_an_open_breaker_and_a_cooldown_give_a_429_with_the_soonest_time(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    backup.inject(Fault.status_code(429, retry_after="2"))
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        client.force_circuit_open()
        with pytest.raises(RateLimitError) as caught:  # throttled, not broken
            await client.complete_async(HELLO)
    assert caught.value.retry_after == 2.0  # the cooldown ends long before "forced open"


async def test_open_breakers_everywhere_give_the_soonest_probe(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    fake.inject(Fault.status_code(503), times=5)
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        system.get("anthropic_client").force_open()  # type: ignore[union-attr]
        for _ in range(5):  # openai opens for 60 s (each time the last word is anthropic's)
            with pytest.raises(CircuitOpenAPIError):
                await client.complete_async(HELLO, use_fallback=False)
        assert fake.count == 5
        clock.advance(20.0)
        with pytest.raises(CircuitOpenAPIError) as caught:
            await client.complete_async(HELLO, use_fallback=False)
    assert caught.value.retry_after == pytest.approx(40.0)  # openai's, not "forced" (inf)
    assert caught.value.provider == "openai"


# -- connection slots ----------------------------------------------------------------------------


async def test_ten_times_the_pool_of_slow_healthy_calls_never_open_the_breaker(
    simulator: Simulator,
) -> None:
    """Issue 13 #1: waiting for a connection is not the provider's slowness."""
    simulator.control(latency=0.05)
    # Alone, each call takes 0.05 s of a 0.25 s timeout; queued ten deep behind two
    # connections the last ones wait 0.45 s, which the old client counted as timeouts.
    async with (
        ActorSystem() as system,
        sim_client(simulator, "openai", system, model="m", pool_size=2, timeout=0.25) as client,
    ):
        results: list[Any] = []

        async def one() -> None:
            results.append(await client.complete_async(HELLO, use_fallback=False))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(one)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert len(results) == 20
    assert metrics is not None
    assert (metrics["state"], metrics["failed_calls"], metrics["successful_calls"]) == (
        "closed",
        0,
        20,
    )


async def test_a_saturated_pool_is_ours_not_the_providers(
    fake: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.hang())
    async with (
        client_for("openai", fake, system, pool_size=1, pool_timeout=0.05) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(functools.partial(client.complete_async, HELLO))
        await wait_for(lambda: fake.count == 1)
        with pytest.raises(ProviderSaturatedError, match="pool_size"):
            await client.complete_async(HELLO)
        fake.release()
    metrics = client.get_circuit_breaker_metrics()
    assert metrics is not None
    assert (metrics["total_calls"], metrics["failed_calls"]) == (1, 0)  # the hung call only
    assert fake.count == 1


# -- connections and odd errors --------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_a_run_of_streams_reuses_one_connection(
    fake: FakeProvider, system: ActorSystem, wire: str
) -> None:
    fake.tail_delay = 0.02  # the end marker arrives before the end of the body
    async with client_for(wire, fake, system) as client:
        for _ in range(5):
            async with client.stream_async(HELLO) as stream:
                async for _delta in stream:
                    pass
            assert stream.done
    assert len({request.client_port for request in fake.requests}) == 1


async def test_an_unexpected_client_error_is_an_api_error_and_the_fallback_answers(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    # aiohttp refuses a header value with a newline with a ValueError, before sending.
    chain = [backup_entry(backup)]
    async with client_for(
        "openai", fake, system, api_key="sk-broken\nkey", fallback_providers=chain
    ) as client:
        answer = await client.complete_async(HELLO)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert answer.provider == "anthropic"
    assert metrics is not None and metrics["failed_calls"] == 1
    assert fake.count == 0


async def test_a_cancelled_call_is_ignored_and_frees_the_half_open_slot(
    fake: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    fake.inject(Fault.status_code(503), times=5)
    async with client_for("openai", fake, system) as client:
        for _ in range(5):
            with pytest.raises(ServiceUnavailableError):  # the five failures that open it
                await client.complete_async(HELLO, use_fallback=False)
        clock.advance(60.0)  # past the break: the next call is the probe
        fake.inject(Fault.hang())
        with anyio.move_on_after(0.2):
            await client.complete_async(HELLO)
        metrics = await client.get_circuit_breaker_metrics_async()
        assert metrics is not None
        assert metrics["half_open_calls_in_flight"] == 0
        answer = await client.complete_async(HELLO)  # the slot is free at once
    assert (answer.is_fallback, metrics["ignored_calls"]) == (False, 1)
