"""The public contract of ``service.circuit_breaker``, exactly as issue 2 lists it: names,
defaults, validation, errors, metrics, registry, decorators, per-caller consistency and the
sync/async parity of the facade."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

import service.circuit_breaker as api
from actors import ActorSystem, ManualClock
from service.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerMetrics,
    CircuitBreakerOpenError,
    CircuitState,
    circuit_breaker,
    get_all_circuit_breakers,
    get_circuit_breaker,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
THREE = CircuitBreakerConfig(failure_threshold=3, timeout_duration=60.0)


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def boom() -> None:
    raise Boom


async def aok() -> str:
    return "ok"


async def aboom() -> None:
    raise Boom


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


# -- names, enum, config ---------------------------------------------------------------------


def test_public_names() -> None:
    expected = {
        "CircuitBreaker",
        "CircuitBreakerConfig",
        "CircuitBreakerMetrics",
        "CircuitBreakerOpenError",
        "CircuitState",
        "circuit_breaker",
        "get_all_circuit_breakers",
        "get_circuit_breaker",
    }
    assert expected <= set(api.__all__)
    for name in expected:
        assert getattr(api, name) is not None


def test_circuit_state_values() -> None:
    assert [(state.name, state.value) for state in CircuitState] == [
        ("CLOSED", "closed"),
        ("OPEN", "open"),
        ("HALF_OPEN", "half_open"),
    ]


def test_config_defaults() -> None:
    config = CircuitBreakerConfig()
    assert config.failure_threshold == 5
    assert config.success_threshold == 3
    assert config.timeout_duration == 60.0
    assert config.reset_timeout == 300.0
    assert config.monitoring_window == 60.0
    assert config.half_open_max_calls == 3
    assert config.expected_exceptions == (Exception,)
    assert config.ignore_exceptions == ()


def test_config_is_frozen_and_keyword_only() -> None:
    config = CircuitBreakerConfig(failure_threshold=2)
    with pytest.raises(AttributeError):
        config.failure_threshold = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        CircuitBreakerConfig(2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        CircuitBreakerConfig(failure_treshold=2)  # type: ignore[call-arg]
    assert config == CircuitBreakerConfig(failure_threshold=2)
    assert hash(config) == hash(CircuitBreakerConfig(failure_threshold=2))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", -1),
        ("failure_threshold", 1.5),
        ("failure_threshold", True),
        ("failure_threshold", "5"),
        ("success_threshold", 0),
        ("success_threshold", None),
        ("half_open_max_calls", 0),
        ("timeout_duration", 0),
        ("timeout_duration", -1.0),
        ("timeout_duration", math.inf),
        ("timeout_duration", math.nan),
        ("timeout_duration", "60"),
        ("timeout_duration", False),
        ("reset_timeout", 0.0),
        ("monitoring_window", -5),
        ("expected_exceptions", (ValueError, 3)),
        ("expected_exceptions", [ValueError]),
        ("expected_exceptions", (int,)),
        ("expected_exceptions", ValueError),
        ("ignore_exceptions", ("RateLimited",)),
        ("ignore_exceptions", None),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        CircuitBreakerConfig(**{field: value})


def test_valid_edge_values_are_accepted() -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=1,
        half_open_max_calls=1,
        timeout_duration=1,  # an int is a number of seconds too
        reset_timeout=0.001,
        monitoring_window=0.5,
        expected_exceptions=(OSError, TimeoutError),
        ignore_exceptions=(ConnectionRefusedError,),
    )
    assert config.timeout_duration == 1


# -- the open error --------------------------------------------------------------------------


def test_open_error_carries_its_data_and_is_an_exception() -> None:
    error = CircuitBreakerOpenError("payments", CircuitState.OPEN, 12.5)
    assert isinstance(error, Exception)
    assert (error.breaker_name, error.state, error.retry_after) == ("payments", OPEN, 12.5)
    assert "payments" in str(error) and "12.5" in str(error)
    forced = CircuitBreakerOpenError("payments", CircuitState.OPEN, math.inf)
    assert "forced open" in str(forced)


def test_open_error_is_easy_to_subclass() -> None:
    class APIError(Exception):
        pass

    class BreakerOpenAPIError(CircuitBreakerOpenError, APIError):
        pass

    with pytest.raises(APIError) as caught:
        raise BreakerOpenAPIError("llm", CircuitState.HALF_OPEN, 0.0)
    assert isinstance(caught.value, CircuitBreakerOpenError)
    assert caught.value.retry_after == 0.0
    assert caught.value.state is HALF_OPEN


@pytest.mark.anyio
async def test_retry_after_in_open_half_open_and_forced_open(
    system: ActorSystem, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=1, timeout_duration=30.0, half_open_max_calls=1),
        "retry",
        system=system,
    )
    calls = 0

    def counted() -> str:
        nonlocal calls
        calls += 1
        return "ran"

    with pytest.raises(Boom):
        breaker.call(boom)
    clock.advance(10.0)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        breaker.call(counted)
    assert (caught.value.state, caught.value.retry_after) == (OPEN, 20.0)
    assert caught.value.breaker_name == "retry"
    clock.advance(20.0)
    hold = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(breaker.call_async, hold.wait)  # takes the only probe slot
        await anyio.sleep(0)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await breaker.call_async(aok)
        assert (caught.value.state, caught.value.retry_after) == (HALF_OPEN, 0.0)
        hold.set()
    breaker.force_open()
    with pytest.raises(CircuitBreakerOpenError) as caught:
        breaker.call(counted)
    assert (caught.value.state, caught.value.retry_after) == (OPEN, math.inf)
    assert calls == 0  # a rejected call never runs


# -- the breaker object ----------------------------------------------------------------------


def test_breaker_defaults_and_attributes() -> None:
    breaker = CircuitBreaker()
    assert breaker.name == "default"
    assert breaker.config == CircuitBreakerConfig()
    assert breaker.state is CLOSED
    named = CircuitBreaker(THREE, "explicit")
    assert (named.name, named.config) == ("explicit", THREE)
    assert "explicit" in repr(named) and "CLOSED" in repr(named)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("not a config",), TypeError),
        ((None, ""), ValueError),
        ((None, 42), ValueError),
    ],
)
def test_breaker_rejects_bad_arguments(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        CircuitBreaker(*args)


METRIC_FIELDS = {
    "name",
    "state",
    "forced",
    "total_calls",
    "successful_calls",
    "failed_calls",
    "ignored_calls",
    "rejected_calls",
    "consecutive_failures",
    "failure_rate",
    "state_transitions",
    "last_failure_time",
    "last_success_time",
    "state_changed_at",
}


@pytest.mark.anyio
async def test_metrics_snapshot_and_json_ready_dict(system: ActorSystem) -> None:
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=2, expected_exceptions=(Boom,)),
        "metrics",
        system=system,
    )
    fresh = breaker.metrics
    assert isinstance(fresh, CircuitBreakerMetrics)
    assert set(CircuitBreakerMetrics.__struct_fields__) >= METRIC_FIELDS
    assert (fresh.last_failure_time, fresh.last_success_time, fresh.state_changed_at) == (
        None,
        None,
        None,
    )
    assert fresh.failure_rate == 0.0
    breaker.call(ok)
    with pytest.raises(KeyError):
        breaker.call(lambda: {}["missing"])  # not expected: ignored, propagated unchanged
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(boom)
    with pytest.raises(CircuitBreakerOpenError):
        breaker.call(ok)
    metrics = breaker.metrics
    assert metrics.name == "metrics"
    assert metrics.state is OPEN and metrics.forced is False
    assert (metrics.total_calls, metrics.successful_calls, metrics.failed_calls) == (5, 1, 2)
    assert (metrics.ignored_calls, metrics.rejected_calls) == (1, 1)
    assert metrics.consecutive_failures == 2
    assert metrics.failure_rate == pytest.approx(2 / 3)
    assert metrics.state_transitions == 1
    for moment in (metrics.last_failure_time, metrics.last_success_time, metrics.state_changed_at):
        assert isinstance(moment, float) and moment > 1_600_000_000  # epoch seconds
    with pytest.raises(AttributeError):
        metrics.total_calls = 0  # type: ignore[misc]

    as_dict = breaker.get_metrics()
    assert as_dict == metrics.to_dict()
    assert as_dict["state"] == "open"
    assert set(as_dict) >= METRIC_FIELDS
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert await breaker.get_metrics_async() == as_dict


# -- the registry ----------------------------------------------------------------------------


def test_registry_same_name_same_breaker(unique_name: str) -> None:
    first = get_circuit_breaker(unique_name, THREE)
    assert isinstance(first, CircuitBreaker)
    assert get_circuit_breaker(unique_name) is first
    assert get_circuit_breaker(unique_name, CircuitBreakerConfig(failure_threshold=3)) is first
    assert get_all_circuit_breakers()[unique_name] is first
    assert first.config == THREE


def test_registry_conflicting_config_is_a_value_error(unique_name: str) -> None:
    get_circuit_breaker(unique_name, THREE)
    with pytest.raises(ValueError, match=unique_name):
        get_circuit_breaker(unique_name, CircuitBreakerConfig(failure_threshold=9))


def test_registry_default_config_and_listing(unique_name: str) -> None:
    breaker = get_circuit_breaker(unique_name)
    assert breaker.config == CircuitBreakerConfig()
    everything = get_all_circuit_breakers()
    assert isinstance(everything, dict)
    assert everything[unique_name] is breaker
    assert all(name == b.name for name, b in everything.items())
    everything.clear()  # a copy: the registry is untouched
    assert get_all_circuit_breakers()[unique_name] is breaker


def test_direct_construction_is_not_registered(unique_name: str) -> None:
    private = CircuitBreaker(THREE, unique_name)
    assert unique_name not in get_all_circuit_breakers()
    registered = get_circuit_breaker(unique_name, THREE)
    assert registered is not private


def test_registry_creation_races_yield_one_breaker(unique_name: str) -> None:
    start = threading.Barrier(16)
    found: list[CircuitBreaker] = []

    def racer() -> None:
        start.wait()
        found.append(get_circuit_breaker(unique_name, THREE))

    threads = [threading.Thread(target=racer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(found) == 16
    assert all(breaker is found[0] for breaker in found)


# -- decorators ------------------------------------------------------------------------------


def test_decorator_factory_on_a_sync_function(unique_name: str) -> None:
    calls: list[int] = []

    @circuit_breaker(THREE, unique_name)
    def fetch(item: int) -> int:
        """Fetch an item."""
        calls.append(item)
        if item < 0:
            raise Boom
        return item * 2

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch an item."
    assert fetch.circuit_breaker is get_circuit_breaker(unique_name)  # type: ignore[attr-defined]
    assert fetch(21) == 42
    for _ in range(3):
        with pytest.raises(Boom):
            fetch(-1)
    with pytest.raises(CircuitBreakerOpenError):
        fetch(1)
    assert calls == [21, -1, -1, -1]
    assert get_circuit_breaker(unique_name).metrics.rejected_calls == 1


@pytest.mark.anyio
async def test_decorator_factory_on_an_async_function(unique_name: str) -> None:
    @circuit_breaker(THREE, unique_name)
    async def fetch(item: int) -> int:
        await anyio.sleep(0)
        if item < 0:
            raise Boom
        return item * 2

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(21) == 42
    for _ in range(3):
        with pytest.raises(Boom):
            await fetch(-1)
    with pytest.raises(CircuitBreakerOpenError):
        await fetch(1)
    metrics = await get_circuit_breaker(unique_name).metrics_async()
    assert (metrics.successful_calls, metrics.failed_calls, metrics.rejected_calls) == (1, 3, 1)


def test_decorator_factory_defaults_to_the_qualified_name() -> None:
    @circuit_breaker()
    def unnamed() -> str:
        return "ok"

    name = f"{unnamed.__module__}.{unnamed.__qualname__}"
    assert unnamed.circuit_breaker is get_all_circuit_breakers()[name]  # type: ignore[attr-defined]
    assert unnamed() == "ok"


@pytest.mark.anyio
async def test_breaker_instance_as_a_decorator(system: ActorSystem) -> None:
    breaker = CircuitBreaker(THREE, "instance-deco", system=system)

    @breaker
    def sync_double(value: int) -> int:
        return value * 2

    @breaker
    async def async_double(value: int) -> int:
        return value * 2

    assert sync_double(2) == 4
    assert await async_double(3) == 6
    assert inspect.iscoroutinefunction(async_double)
    assert not inspect.iscoroutinefunction(sync_double)
    assert sync_double.circuit_breaker is breaker  # type: ignore[attr-defined]
    assert (await breaker.metrics_async()).successful_calls == 2


def test_call_with_a_coroutine_function_is_a_clear_type_error() -> None:
    breaker = CircuitBreaker(THREE, "misuse")
    with pytest.raises(TypeError, match="call_async"):
        breaker.call(aok)  # type: ignore[arg-type]
    metrics = breaker.metrics
    assert (metrics.failed_calls, metrics.ignored_calls) == (0, 1)


# -- per-caller consistency ------------------------------------------------------------------


async def async_consistency_story(breaker: CircuitBreaker, rounds: int) -> None:
    """Once a tripping call has raised, or a management call has returned, the same task's
    next call sees the new state."""
    ran = 0

    async def counted() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    for _ in range(rounds):
        for _ in range(breaker.config.failure_threshold):
            with pytest.raises(Boom):
                await breaker.call_async(aboom)
        before = ran
        with pytest.raises(CircuitBreakerOpenError):
            await breaker.call_async(counted)
        assert ran == before
        await breaker.reset_async()
        assert await breaker.call_async(counted) == "ok"
        await breaker.force_open_async()
        with pytest.raises(CircuitBreakerOpenError):
            await breaker.call_async(counted)
        await breaker.force_close_async()
        for _ in range(breaker.config.failure_threshold + 2):
            with pytest.raises(Boom):
                await breaker.call_async(aboom)
        assert await breaker.call_async(counted) == "ok"  # forced closed: never opens
        await breaker.reset_async()


def sync_consistency_story(breaker: CircuitBreaker, rounds: int) -> None:
    ran = 0

    def counted() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    for _ in range(rounds):
        for _ in range(breaker.config.failure_threshold):
            with pytest.raises(Boom):
                breaker.call(boom)
        before = ran
        with pytest.raises(CircuitBreakerOpenError):
            breaker.call(counted)
        assert ran == before
        breaker.reset()
        assert breaker.call(counted) == "ok"
        breaker.force_open()
        with pytest.raises(CircuitBreakerOpenError):
            breaker.call(counted)
        breaker.force_close()
        for _ in range(breaker.config.failure_threshold + 2):
            with pytest.raises(Boom):
                breaker.call(boom)
        assert breaker.call(counted) == "ok"
        breaker.reset()


@pytest.mark.anyio
async def test_consistency_for_async_callers_of_registry_breakers(unique_name: str) -> None:
    async with anyio.create_task_group() as group:
        for index in range(8):
            breaker = get_circuit_breaker(f"{unique_name}-{index}", THREE)
            group.start_soon(async_consistency_story, breaker, 20)


@pytest.mark.anyio
async def test_consistency_for_async_callers_of_an_embedded_system(system: ActorSystem) -> None:
    async with anyio.create_task_group() as group:
        for index in range(8):
            breaker = CircuitBreaker(THREE, f"embedded-{index}", system=system)
            group.start_soon(async_consistency_story, breaker, 20)


def test_consistency_for_async_callers_on_another_loop_than_the_breaker() -> None:
    # The breaker's runtime on its own thread, its callers on a loop of theirs.
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ActorSystem()) as system,
    ):
        breakers = [CircuitBreaker(THREE, f"far-{index}", system=system) for index in range(8)]

        async def main() -> None:
            await asyncio.gather(*(async_consistency_story(b, 10) for b in breakers))

        asyncio.run(main())


def test_consistency_for_sync_callers_on_other_threads(unique_name: str) -> None:
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            sync_consistency_story(get_circuit_breaker(f"{unique_name}-{index}", THREE), 20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


@pytest.mark.anyio
async def test_consistency_for_sync_callers_on_the_loop_thread(
    system: ActorSystem, unique_name: str
) -> None:
    # Inside a coroutine, on the loop the breakers run on: every ask is answered inline.
    sync_consistency_story(CircuitBreaker(THREE, "loop-thread", system=system), 20)
    # The registry's breaker, wherever the default system happens to be bound.
    sync_consistency_story(get_circuit_breaker(unique_name, THREE), 5)


@pytest.mark.anyio
async def test_consistency_for_sync_callers_in_worker_threads_of_the_loop(
    system: ActorSystem,
) -> None:
    breakers = [CircuitBreaker(THREE, f"worker-{index}", system=system) for index in range(4)]
    async with anyio.create_task_group() as group:
        for breaker in breakers:
            group.start_soon(
                functools.partial(anyio.to_thread.run_sync, sync_consistency_story, breaker, 10)
            )


# -- sync / async parity ---------------------------------------------------------------------

# Data, not operations: nothing to await.
NOT_OPERATIONS = {"name", "config", "bus", "published_state"}  # reads, no ask


def public_members() -> dict[str, Any]:
    return {
        name: inspect.getattr_static(CircuitBreaker, name)
        for name in dir(CircuitBreaker)
        if not name.startswith("_")
    }


def is_async(function: Any) -> bool:
    """A coroutine function, or an async context manager made with asynccontextmanager."""
    wrapped = getattr(function, "__wrapped__", None)
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(wrapped)


def test_every_async_method_has_a_sync_twin_and_vice_versa() -> None:
    members = public_members()
    asyncs = {name for name in members if name.endswith("_async")}
    syncs = set(members) - asyncs - NOT_OPERATIONS
    assert {f"{name}_async" for name in syncs} == asyncs, "sync names without an async twin"
    assert {name.removesuffix("_async") for name in asyncs} == syncs, "async without sync twin"
    for name in asyncs:
        assert is_async(members[name]), name
    for name in syncs:
        member = members[name]
        function = member.fget if isinstance(member, property) else member
        assert callable(function) and not is_async(function), name
    assert {"call", "reset", "force_open", "force_close"} <= syncs


@pytest.mark.anyio
async def test_twins_do_the_same_thing(system: ActorSystem) -> None:
    sync = CircuitBreaker(THREE, "twin-sync", system=system)
    twin = CircuitBreaker(THREE, "twin-async", system=system)
    steps: list[tuple[Callable[[], Any], Callable[[], Awaitable[Any]]]] = [
        (lambda: sync.call(ok), lambda: twin.call_async(aok)),
        (sync.force_open, twin.force_open_async),
        (lambda: sync.state, twin.state_async),
        (sync.force_close, twin.force_close_async),
        (sync.reset, twin.reset_async),
        (lambda: sync.call(ok), lambda: twin.call_async(aok)),
    ]
    for do_sync, do_async in steps:
        assert do_sync() == await do_async()
    left, right = sync.get_metrics(), await twin.get_metrics_async()
    for key in ("name", "state_changed_at", "last_success_time"):
        left.pop(key), right.pop(key)
    assert left == right


@pytest.mark.anyio
async def test_guarded_blocks_twins_count_one_call_each(
    system: ActorSystem, clock: ManualClock
) -> None:
    config = CircuitBreakerConfig(failure_threshold=2, timeout_duration=10.0)
    sync = CircuitBreaker(config, "guarded-sync", system=system)
    twin = CircuitBreaker(config, "guarded-async", system=system)
    body_ran: list[str] = []

    with sync.guarded():
        body_ran.append("sync ok")
    async with twin.guarded_async():
        body_ran.append("async ok")
    for _ in range(2):
        with pytest.raises(Boom), sync.guarded():
            raise Boom
        with pytest.raises(Boom):
            async with twin.guarded_async():
                raise Boom
    with pytest.raises(CircuitBreakerOpenError), sync.guarded():
        body_ran.append("sync rejected")
    with pytest.raises(CircuitBreakerOpenError):
        async with twin.guarded_async():
            body_ran.append("async rejected")
    clock.advance(10.0)
    with sync.guarded():  # a probe, given back on the way out
        body_ran.append("sync probe")
    async with twin.guarded_async():
        body_ran.append("async probe")
    assert body_ran == ["sync ok", "async ok", "sync probe", "async probe"]
    left, right = sync.metrics, await twin.metrics_async()
    for metrics in (left, right):
        assert metrics.state is HALF_OPEN
        assert metrics.half_open_calls_in_flight == 0
        assert (metrics.successful_calls, metrics.failed_calls, metrics.rejected_calls) == (2, 2, 1)
