"""Spans through the real SDK into an ``InMemorySpanExporter``: outages, rejection events on the
caller's span, and sampled per-call spans."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import telemetry
from actors import ActorSystem, CircuitBreakerConfig, CircuitBreakerOpenError, ManualClock
from actors import breaker as breaker_module
from actors.breaker import Breaker, guard
from actors.errors import ConfigurationError
from telemetry import Telemetry, names, tracing
from telemetry.tracing import CallSpans, add_rejection_event, traced
from tests.telemetry import flows


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


@pytest.fixture
async def tel(system: ActorSystem) -> AsyncIterator[Telemetry]:
    tel = telemetry.setup_in_memory(system)
    yield tel
    await tel.shutdown_async()


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def finished(tel: Telemetry, name: str) -> list[ReadableSpan]:
    assert tel.force_flush()
    spans = tel.span_exporter.get_finished_spans()  # type: ignore[attr-defined]
    return [span for span in spans if span.name == name]


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


def change(from_state: str, to_state: str, reason: str) -> tuple[str, dict[str, Any]]:
    return (
        names.STATE_CHANGE_EVENT,
        {
            names.TRANSITION_FROM: from_state,
            names.TRANSITION_TO: to_state,
            names.TRANSITION_REASON: reason,
        },
    )


def probe(outcome: str) -> tuple[str, dict[str, Any]]:
    return (names.PROBE_EVENT, {names.OUTCOME: outcome, names.PROBE_COUNT: 1})


def fail() -> None:
    raise ValueError("down")


def trip(breaker: Breaker) -> None:
    for _ in range(flows.CONFIG.failure_threshold):
        with pytest.raises(ValueError):
            breaker.call(fail)


# -- outage spans -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_failed_probe_keeps_the_outage_running(
    system: ActorSystem, clock: ManualClock, tel: Telemetry
) -> None:
    breaker = system.breaker("flaky", flows.CONFIG)
    trip(breaker)
    clock.advance(flows.CONFIG.timeout_duration)
    with pytest.raises(ValueError):
        breaker.call(fail)  # the probe fails: open again, same outage
    assert finished(tel, names.OPEN_SPAN) == []
    clock.advance(flows.CONFIG.timeout_duration)
    breaker.call(lambda: None)  # this probe closes it
    [span] = finished(tel, names.OPEN_SPAN)
    assert events(span) == [
        change("open", "half_open", "timeout_elapsed"),
        probe("failure"),
        change("half_open", "open", "probe_failed"),
        change("open", "half_open", "timeout_elapsed"),
        probe("success"),
        change("half_open", "closed", "probes_succeeded"),
    ]
    assert span.attributes is not None
    assert span.attributes[names.HALF_OPEN_ATTEMPTS] == 2
    assert (span.attributes[names.PROBE_FAILURES], span.attributes[names.PROBE_SUCCESSES]) == (1, 1)


@pytest.mark.anyio
async def test_successful_probes_before_the_last_are_events_too(
    system: ActorSystem, clock: ManualClock, tel: Telemetry
) -> None:
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=3, timeout_duration=1.0)
    breaker = system.breaker("careful", config)
    with pytest.raises(ValueError):
        breaker.call(fail)
    clock.advance(1.0)
    for _ in range(3):
        breaker.call(lambda: None)
    [span] = finished(tel, names.OPEN_SPAN)
    assert events(span) == [
        change("open", "half_open", "timeout_elapsed"),
        probe("success"),
        probe("success"),
        probe("success"),
        change("half_open", "closed", "probes_succeeded"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(("end", "reason"), [("reset", "reset"), ("force_close", "forced_close")])
async def test_management_ends_an_outage(
    system: ActorSystem, tel: Telemetry, end: str, reason: str
) -> None:
    breaker = system.breaker("managed", flows.CONFIG)
    await breaker.force_open_async()
    await getattr(breaker, f"{end}_async")()
    [span] = finished(tel, names.OPEN_SPAN)
    assert span.attributes is not None
    assert span.attributes[names.TRANSITION_REASON] == "forced_open"
    assert span.attributes[names.FORCED] is True
    assert span.attributes[names.CLOSE_REASON] == reason
    assert events(span) == [change("open", "closed", reason)]


@pytest.mark.anyio
async def test_shutdown_ends_a_running_outage(system: ActorSystem) -> None:
    tel = telemetry.setup_in_memory(system)
    trip(system.breaker("down", flows.CONFIG))
    exporter = tel.span_exporter
    await tel.shutdown_async()
    [span] = [s for s in exporter.get_finished_spans() if s.name == names.OPEN_SPAN]  # type: ignore[attr-defined]
    assert span.attributes is not None
    assert span.attributes[names.CLOSE_REASON] == "telemetry_shutdown"


@pytest.mark.anyio
async def test_shutdown_after_the_system_closed_still_ends_outages(clock: ManualClock) -> None:
    async with ActorSystem(clock=clock) as system:
        tel = telemetry.setup_in_memory(system)
        trip(system.breaker("late", flows.CONFIG))
        await system.breaker("late").metrics_async()
    exporter = tel.span_exporter
    await tel.shutdown_async()
    spans = exporter.get_finished_spans()  # type: ignore[attr-defined]
    assert [span.name for span in spans] == [names.OPEN_SPAN]


# -- rejection events ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rejection_listener_only_while_telemetry_is_on(system: ActorSystem) -> None:
    assert add_rejection_event not in breaker_module.rejection_listeners
    first = telemetry.setup_in_memory(system)
    second = telemetry.setup_in_memory(system)
    assert breaker_module.rejection_listeners.count(add_rejection_event) == 1
    await first.shutdown_async()
    assert add_rejection_event in breaker_module.rejection_listeners  # still in use
    await second.shutdown_async()
    assert add_rejection_event not in breaker_module.rejection_listeners


@pytest.mark.anyio
async def test_rejection_event_on_the_callers_span(
    system: ActorSystem, tel: Telemetry, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, memory = exporter
    breaker = system.breaker("held", flows.CONFIG)
    await breaker.force_open_async()
    with pytest.raises(CircuitBreakerOpenError):
        breaker.call(lambda: None)  # no span: nothing to annotate, nothing breaks
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("handler"), pytest.raises(CircuitBreakerOpenError):
        breaker.call(lambda: None)
    [span] = memory.get_finished_spans()
    # Forced open has no retry time: the event says so instead of carrying infinity.
    assert events(span) == [
        (names.REJECTED_EVENT, {names.NAME: "held", names.STATE: "open", names.FORCED: True})
    ]


# -- per-call spans -----------------------------------------------------------------------------


@pytest.fixture
def call_spans_off() -> Iterator[None]:
    yield
    tracing.enable_call_spans(None)


def guarded(system: ActorSystem, name: str, fn: Any) -> Any:
    return guard(system.breaker(name, flows.CONFIG), fn)


def test_traced_needs_a_guarded_function() -> None:
    with pytest.raises(TypeError, match="guarded by a circuit breaker"):
        traced(lambda: None)


@pytest.mark.anyio
async def test_traced_is_a_pass_through_until_enabled(
    system: ActorSystem, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, memory = exporter
    answer = traced(guarded(system, "plain", lambda x: x * 2))
    assert answer(21) == 42
    assert answer.circuit_breaker is system.breaker("plain")
    assert memory.get_finished_spans() == ()


@pytest.mark.anyio
async def test_call_spans_label_every_outcome(
    system: ActorSystem,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    call_spans_off: None,
) -> None:
    provider, memory = exporter
    tracing.enable_call_spans(CallSpans(provider.get_tracer("t"), 1.0))
    config = CircuitBreakerConfig(
        failure_threshold=2, ignore_exceptions=(KeyError,), failure_predicate=lambda r: r == "bad"
    )
    breaker = system.breaker("judged", config)

    @traced
    @breaker
    def work(kind: str) -> str:
        if kind == "raise":
            raise ValueError("down")
        if kind == "ignore":
            raise KeyError(kind)
        return kind

    assert work("good") == "good"
    assert work("bad") == "bad"  # a failure by the predicate, still returned
    with pytest.raises(KeyError):
        work("ignore")
    with pytest.raises(ValueError):
        work("raise")  # second failure: open
    with pytest.raises(CircuitBreakerOpenError):
        work("good")
    spans = memory.get_finished_spans()
    assert [span.name for span in spans] == [names.CALL_SPAN] * 5
    labels = [
        (
            span.attributes[names.OUTCOME],
            span.attributes.get(names.ERROR_TYPE),
            span.status.status_code,
        )
        for span in spans
        if span.attributes is not None
    ]
    assert labels == [
        ("success", None, StatusCode.UNSET),
        ("failure", "failure_predicate", StatusCode.ERROR),
        ("ignored", None, StatusCode.UNSET),
        ("failure", "ValueError", StatusCode.ERROR),
        ("rejected", "CircuitBreakerOpenError", StatusCode.ERROR),
    ]
    assert spans[-1].events == ()  # no telemetry set up: no rejection listener

    tracing.listen_for_rejections()
    try:
        with pytest.raises(CircuitBreakerOpenError):
            work("good")
    finally:
        tracing.stop_listening_for_rejections()
    # The rejection event lands on the call's own span, which is current during the call.
    rejected = memory.get_finished_spans()[-1]
    assert [event.name for event in rejected.events] == [names.REJECTED_EVENT]


@pytest.mark.anyio
async def test_call_spans_are_sampled(
    system: ActorSystem,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    call_spans_off: None,
) -> None:
    provider, memory = exporter
    draws = iter([0.1, 0.9, 0.49, 0.5, 0.0])
    tracing.enable_call_spans(CallSpans(provider.get_tracer("t"), 0.5, sample=draws.__next__))
    fn = traced(guarded(system, "sampled", lambda: None))
    for _ in range(5):
        fn()
    assert len(memory.get_finished_spans()) == 3  # draws below 0.5: 0.1, 0.49, 0.0


@pytest.mark.anyio
async def test_async_call_spans_through_setup(system: ActorSystem) -> None:
    tel = telemetry.setup_in_memory(system, call_span_ratio=1.0)
    breaker = system.breaker("async", flows.CONFIG)

    @traced
    @breaker
    async def work() -> str:
        return "done"

    assert await work() == "done"
    [span] = finished(tel, names.CALL_SPAN)
    assert span.attributes is not None
    assert dict(span.attributes) == {names.NAME: "async", names.OUTCOME: "success"}
    await tel.shutdown_async()
    assert tracing._call_spans is None  # shutdown turns per-call spans off again
    assert await work() == "done"


@pytest.mark.parametrize("ratio", [-0.1, 1.5, "1", True, None])
def test_call_span_ratio_is_checked_before_anything_is_built(
    ratio: Any, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = exporter
    with pytest.raises(ConfigurationError, match="call_span_ratio"):
        CallSpans(provider.get_tracer("t"), ratio)
    system = ActorSystem()
    with pytest.raises(ConfigurationError, match="call_span_ratio"):
        telemetry.setup(system, call_span_ratio=ratio, use_global=False, set_global=False)
    with pytest.raises(ConfigurationError, match="call_span_ratio"):
        telemetry.setup_in_memory(system, call_span_ratio=ratio)
    assert not system.bus.subscriptions
