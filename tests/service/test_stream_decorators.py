"""``@circuit_breaker`` on streams: a failure raised mid-iteration is a failure of the call.

Before, the decorator judged only the creation of the iterator: three streams that each broke
with ``ConnectionError`` halfway left the breaker CLOSED with three successes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest

from service.circuit_breaker import (
    CircuitBreakerConfig,
    CircuitBreakerMetrics,
    CircuitBreakerOpenError,
    CircuitState,
    circuit_breaker,
    get_circuit_breaker,
    guarded_async,
)

pytestmark = pytest.mark.anyio

THREE = CircuitBreakerConfig(failure_threshold=3, timeout_duration=60.0)


async def tokens(fail: bool, started: list[int]) -> AsyncIterator[str]:
    """A stream of two tokens that breaks after the first when ``fail``."""
    started.append(1)
    yield "hello"
    if fail:
        raise ConnectionError("upstream hung up mid-stream")
    yield "world"


async def drain(stream: AsyncIterator[str]) -> list[str]:
    return [item async for item in stream]


async def metrics(name: str) -> CircuitBreakerMetrics:
    return await get_circuit_breaker(name).metrics_async()


def generator_function(name: str, started: list[int]) -> Callable[[bool], Any]:
    @circuit_breaker(THREE, name)
    async def stream(fail: bool) -> AsyncGenerator[str, None]:
        async for item in tokens(fail, started):
            yield item

    return stream


def sync_function_returning_a_stream(name: str, started: list[int]) -> Callable[[bool], Any]:
    @circuit_breaker(THREE, name)
    def stream(fail: bool) -> AsyncIterator[str]:
        return tokens(fail, started)

    return stream


def async_function_returning_a_stream(name: str, started: list[int]) -> Callable[[bool], Any]:
    @circuit_breaker(THREE, name)
    async def stream(fail: bool) -> AsyncIterator[str]:
        return tokens(fail, started)

    return stream


def breaker_used_as_a_decorator(name: str, started: list[int]) -> Callable[[bool], Any]:
    """``@breaker`` (``Breaker.__call__``) shares the decorator's stream rules."""

    @get_circuit_breaker(name, THREE)
    async def stream(fail: bool) -> AsyncGenerator[str, None]:
        async for item in tokens(fail, started):
            yield item

    return stream


SHAPES = [
    generator_function,
    sync_function_returning_a_stream,
    async_function_returning_a_stream,
    breaker_used_as_a_decorator,
]


async def open_stream(stream: Callable[[bool], Any], fail: bool) -> AsyncIterator[str]:
    made = stream(fail)
    return await made if not hasattr(made, "__anext__") else made  # type: ignore[no-any-return]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
async def test_failures_raised_mid_iteration_open_the_breaker(
    unique_name: str, shape: Callable[[str, list[int]], Callable[[bool], Any]]
) -> None:
    started: list[int] = []
    stream = shape(unique_name, started)
    assert stream.circuit_breaker is get_circuit_breaker(unique_name)  # type: ignore[attr-defined]
    for _ in range(3):
        received: list[str] = []
        with pytest.raises(ConnectionError):
            async for item in await open_stream(stream, True):
                received.append(item)
        assert received == ["hello"]
    counts = await metrics(unique_name)
    assert counts.state is CircuitState.OPEN
    assert (counts.successful_calls, counts.failed_calls) == (0, 3)

    with pytest.raises(CircuitBreakerOpenError):
        await drain(await open_stream(stream, False))
    assert len(started) == 3  # the rejected stream never started


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
async def test_a_whole_stream_is_one_success_and_an_abandoned_one_is_ignored(
    unique_name: str, shape: Callable[[str, list[int]], Callable[[bool], Any]]
) -> None:
    stream = shape(unique_name, [])
    assert await drain(await open_stream(stream, False)) == ["hello", "world"]
    abandoned = await open_stream(stream, False)
    assert await abandoned.__anext__() == "hello"
    await abandoned.aclose()  # type: ignore[attr-defined]
    counts = await metrics(unique_name)
    assert (counts.successful_calls, counts.failed_calls, counts.ignored_calls) == (1, 0, 1)
    assert counts.state is CircuitState.CLOSED


async def test_a_function_hiding_that_it_returns_a_stream_is_refused(unique_name: str) -> None:
    @circuit_breaker(THREE, unique_name)
    def stream(fail):  # type: ignore[no-untyped-def]  # no annotation: nothing says "stream"
        return tokens(fail, [])

    with pytest.raises(TypeError, match=r"guarded_async\(breaker, stream\)"):
        stream(False)  # type: ignore[no-untyped-call]

    @circuit_breaker(THREE, unique_name)
    async def stream_async(fail):  # type: ignore[no-untyped-def]
        return tokens(fail, [])

    with pytest.raises(TypeError, match="annotate its return type as AsyncIterator"):
        await stream_async(False)  # type: ignore[no-untyped-call]


async def test_guarded_async_runs_any_async_iterable_as_one_call(unique_name: str) -> None:
    breaker = get_circuit_breaker(unique_name, THREE)
    assert await drain(guarded_async(breaker, tokens(False, []))) == ["hello", "world"]
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await drain(guarded_async(breaker, tokens(True, [])))
    counts = await metrics(unique_name)
    assert (counts.successful_calls, counts.failed_calls) == (1, 3)
    assert counts.state is CircuitState.OPEN


async def test_plain_functions_keep_their_results(unique_name: str) -> None:
    @circuit_breaker(THREE, unique_name)
    async def fetch(item: int) -> list[int]:
        return [item]

    assert await fetch(2) == [2]
    assert (await metrics(unique_name)).successful_calls == 1
