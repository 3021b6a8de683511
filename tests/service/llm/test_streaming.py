"""Streaming (SSE) through the breaker and the chain, against the fake provider."""

from __future__ import annotations

import pytest

from actors import ActorSystem
from service.llm_client import (
    DEFAULT_FALLBACK_TEXT,
    APIError,
    CircuitOpenAPIError,
    LLMResponse,
    MalformedResponseError,
    NetworkTimeoutError,
    RateLimitError,
    ServiceUnavailableError,
    Usage,
)
from tests.service.llm.fake_provider import FakeProvider, Fault
from tests.service.llm.helpers import HELLO, WIRES, backup_entry, client_for

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("wire", WIRES)
async def test_a_stream_yields_the_deltas_and_ends_with_the_whole_answer(
    fake: FakeProvider, system: ActorSystem, wire: str
) -> None:
    async with client_for(wire, fake, system) as client:
        stream = client.stream_async(HELLO)
        assert fake.count == 0  # nothing is sent before the first iteration
        deltas = [delta async for delta in stream]
        metrics = await client.get_circuit_breaker_metrics_async()
    assert deltas == ["Hello ", "from ", "the ", "fake ", "provider"]
    model = "fake-claude" if wire == "anthropic" else "fake-gpt"
    assert stream.response() == LLMResponse(
        content="Hello from the fake provider",
        model=model,
        provider=wire,
        usage=Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18),
        finish_reason="stop",
    )
    assert fake.requests[0].body["stream"] is True
    assert metrics is not None and metrics["successful_calls"] == 1


STREAM_FAULTS = [
    (Fault.cut_stream(after=2), NetworkTimeoutError, True),
    (Fault.stop_stream(after=2), MalformedResponseError, True),
    (Fault.stream_error("overloaded_error", after=2), ServiceUnavailableError, True),
    (Fault.stream_error("rate_limit_error", after=2), RateLimitError, False),
]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("fault", "error", "counted"), STREAM_FAULTS, ids=lambda value: getattr(value, "kind", None)
)
async def test_a_stream_that_fails_before_its_end_raises_and_counts(
    fake: FakeProvider,
    system: ActorSystem,
    wire: str,
    fault: Fault,
    error: type[APIError],
    counted: bool,
) -> None:
    fake.inject(fault)
    received: list[str] = []
    async with client_for(wire, fake, system) as client:
        stream = client.stream_async(HELLO)
        with pytest.raises(APIError) as caught:
            async for delta in stream:
                received.append(delta)
        assert [delta async for delta in stream] == []  # the iteration is over...
        metrics = await client.get_circuit_breaker_metrics_async()
    assert type(caught.value) is error
    assert received == ["Hello ", "from "]
    assert (stream.done, stream.content) == (False, "Hello from ")  # ...but incomplete
    with pytest.raises(RuntimeError, match="not completed"):
        stream.response()
    assert metrics is not None
    assert (metrics["failed_calls"], metrics["ignored_calls"]) == (int(counted), int(not counted))


@pytest.mark.parametrize("wire", WIRES)
async def test_an_error_status_at_the_start_of_a_stream_is_mapped(
    fake: FakeProvider, system: ActorSystem, wire: str
) -> None:
    fake.inject(Fault.status_code(529))
    async with client_for(wire, fake, system) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            async for _ in client.stream_async(HELLO):
                pass
    assert caught.value.status == 529


async def test_five_broken_streams_open_the_breaker_and_the_sixth_sends_nothing(
    fake: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.cut_stream(after=1), times=5)
    async with client_for("openai", fake, system) as client:
        for _ in range(5):
            with pytest.raises(NetworkTimeoutError):
                async for _ in client.stream_async(HELLO):
                    pass
        with pytest.raises(CircuitOpenAPIError):
            async for _ in client.stream_async(HELLO, use_fallback=False):
                pass
    assert fake.count == 5


async def test_an_open_breaker_streams_the_fallback_text_without_a_request(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system) as client:
        client.force_circuit_open()
        stream = client.stream_async(HELLO)
        deltas = [delta async for delta in stream]
    assert deltas == [DEFAULT_FALLBACK_TEXT]
    assert (stream.is_fallback, stream.provider, stream.done) == (True, "openai", True)
    assert fake.count == 0


async def test_a_stream_falls_back_to_the_next_provider_before_its_first_delta(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(503))
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        failed_over = client.stream_async(HELLO)
        text = "".join([delta async for delta in failed_over])
        client.force_circuit_open()
        while_open = client.stream_async(HELLO)
        again = "".join([delta async for delta in while_open])
    assert text == again == "Hello from the backup"
    assert (failed_over.provider, while_open.provider) == ("anthropic", "anthropic")
    assert (fake.count, backup.count) == (1, 2)


async def test_a_stream_stopped_early_counts_as_ignored(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system) as client:
        async with client.stream_async(HELLO) as stream:
            async for _ in stream:
                break
        metrics = await client.get_circuit_breaker_metrics_async()
    assert not stream.done
    assert metrics is not None
    assert (metrics["state"], metrics["ignored_calls"], metrics["failed_calls"]) == ("closed", 1, 0)
