"""``telemetry.setup``: the environment, the switches, host providers, and staying out of the way
when telemetry is off."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import telemetry
from actors import ActorSystem, CallsRecorded, ManualClock, StateChanged
from actors import breaker as breaker_module
from actors.errors import ConfigurationError
from telemetry import names
from telemetry.tracing import add_rejection_event
from tests.telemetry import flows
from tests.telemetry.receivers import GrpcReceiver, HttpReceiver, attributes

ROOT = Path(__file__).resolve().parents[2]
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in OTEL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # export on flush only
    yield


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(clock=clock) as system:
        yield system


def assert_detached(system: ActorSystem) -> None:
    assert not system.bus.wants(CallsRecorded)
    assert not system.bus.wants(StateChanged)
    assert add_rejection_event not in breaker_module.rejection_listeners


@pytest.mark.anyio
async def test_sdk_disabled_means_nothing_at_all(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tel = telemetry.setup(system, use_global=False, set_global=False)
    assert not tel.enabled
    assert (tel.meter_provider, tel.tracer_provider) == (None, None)
    assert repr(tel) == "<Telemetry disabled>"
    assert_detached(system)  # breakers build no CallsRecorded, rejections notify nobody
    assert tel.force_flush() and await tel.force_flush_async()
    tel.shutdown()
    await tel.shutdown_async()


@pytest.mark.anyio
async def test_no_exporters_means_off(system: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    tel = telemetry.setup(system, use_global=False, set_global=False)
    assert not tel.enabled
    assert_detached(system)


@pytest.mark.anyio
async def test_metrics_without_traces(system: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    reader = InMemoryMetricReader()
    with telemetry.setup(system, metric_reader=reader, use_global=False, set_global=False) as tel:
        assert tel.tracer_provider is None and tel.meter_provider is not None
        assert add_rejection_event not in breaker_module.rejection_listeners
        assert tel.metric_reader is reader
        system.breaker("m").call(lambda: None)
        await system.breaker("m").metrics_async()
        await tel.force_flush_async()
        data = reader.get_metrics_data()
        assert data is not None
        exported = {
            m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }
        assert names.CALL_DURATION in exported and names.CALLS in exported
    assert_detached(system)  # leaving the block shut it down


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json'"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ("OTEL_METRICS_EXPORTER", "zipkin", "OTEL_METRICS_EXPORTER: 'zipkin'"),
        ("OTEL_TRACES_EXPORTER", "prometheus", "OTEL_TRACES_EXPORTER: 'prometheus'"),
    ],
)
def test_unsupported_settings_are_named_and_build_nothing(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    readers_before = _reader_threads()
    with pytest.raises(ConfigurationError, match=message):
        telemetry.setup(ActorSystem(), use_global=False, set_global=False)
    assert _reader_threads() == readers_before  # validated before any reader thread started


def _reader_threads() -> int:
    return sum(t.name == "OtelPeriodicExportingMetricReader" for t in threading.enumerate())


@pytest.mark.anyio
async def test_console_exporter_by_name(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    tel = telemetry.setup(system, use_global=False, set_global=False)
    assert [type(e) for e in tel.span_exporters] == [ConsoleSpanExporter]
    assert tel.meter_provider is None
    await tel.shutdown_async()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("service_name", "environment", "expected"),
    [
        (None, {}, "breakerd"),
        (None, {"OTEL_SERVICE_NAME": "from-env"}, "from-env"),
        ("from-code", {"OTEL_SERVICE_NAME": "from-env"}, "from-code"),
        (None, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=attrs,team=sre"}, "attrs"),
    ],
)
async def test_service_name(
    system: ActorSystem,
    monkeypatch: pytest.MonkeyPatch,
    service_name: str | None,
    environment: dict[str, str],
    expected: str,
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    reader = InMemoryMetricReader()
    tel = telemetry.setup(
        system,
        service_name=service_name,
        metric_reader=reader,
        span_exporter=InMemorySpanExporter(),
        use_global=False,
        set_global=False,
    )
    system.breaker("s").call(lambda: None)
    await system.breaker("s").metrics_async()
    await tel.force_flush_async()
    data = reader.get_metrics_data()
    assert data is not None
    assert {rm.resource.attributes["service.name"] for rm in data.resource_metrics} == {expected}
    await tel.shutdown_async()


@pytest.mark.anyio
async def test_signals_may_use_different_protocols_and_endpoints(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch, unique_name: str
) -> None:
    async with GrpcReceiver() as metrics_collector, HttpReceiver() as traces_collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", metrics_collector.endpoint)
        traces_url = f"{traces_collector.endpoint}/v1/traces"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_url)
        async with ActorSystem(clock=clock) as system:
            tel = telemetry.setup(system, use_global=False, set_global=False)
            assert tel.tracer_provider is not None
            tracer = tel.tracer_provider.get_tracer("t")
            await flows.drive_outage(system, clock, tracer, unique_name)
            await tel.shutdown_async()
    assert names.CALL_DURATION in metrics_collector.received.latest_metrics(names.SCOPE)
    assert metrics_collector.received.traces == []
    assert len(traces_collector.received.spans(names.OPEN_SPAN)) == 1
    assert traces_collector.received.metrics == []


@pytest.mark.anyio
async def test_arguments_override_the_environment(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch, unique_name: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nobody there
    async with HttpReceiver() as collector, ActorSystem(clock=clock) as system:
        tel = telemetry.setup(
            system,
            protocol="http/protobuf",
            endpoint=collector.endpoint + "/",
            service_name="args",
            use_global=False,
            set_global=False,
        )
        assert tel.tracer_provider is not None
        tracer = tel.tracer_provider.get_tracer("t")
        await flows.drive_outage(system, clock, tracer, unique_name)
        await tel.shutdown_async()
    received = collector.received
    assert names.CALLS in received.latest_metrics(names.SCOPE)
    assert len(received.spans(names.OPEN_SPAN)) == 1
    assert {r["service.name"] for r in received.resources()} == {"args"}
    [span] = received.spans(names.OPEN_SPAN)
    assert attributes(span.attributes)[names.NAME] == unique_name


HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import telemetry
    from actors import ActorSystem, ManualClock
    from tests.telemetry import flows

    # The host application installs its own providers before it embeds breakerd.
    resource = Resource.create({"service.name": "host-app"})
    reader = InMemoryMetricReader()
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meters)
    exporter = InMemorySpanExporter()
    tracers = TracerProvider(resource=resource)
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracers)


    async def main():
        clock = ManualClock()
        async with ActorSystem(clock=clock) as system:
            tel = telemetry.setup(system)
            result = {
                "same_providers": tel.meter_provider is meters and tel.tracer_provider is tracers,
                "owned_readers": len(tel.metric_readers) + len(tel.span_exporters),
            }
            await flows.drive_outage(system, clock, trace.get_tracer("host"), "embedded")
            await tel.force_flush_async()
            data = reader.get_metrics_data()
            result["metrics"] = sorted(
                m.name
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                if sm.scope.name == "breakerd"
                for m in sm.metrics
            )
            result["resources"] = sorted(
                {rm.resource.attributes["service.name"] for rm in data.resource_metrics}
            )
            await tel.shutdown_async()
        # Still the host's: not shut down by breakerd.
        trace.get_tracer("host").start_span("after").end()
        result["spans"] = [span.name for span in exporter.get_finished_spans()]
        print(json.dumps(result))


    asyncio.run(main())
    """
)


def test_host_providers_are_used_not_replaced() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HOST_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {
        "same_providers": True,
        "owned_readers": 0,
        "metrics": sorted(
            [
                names.CALLS,
                names.TRANSITIONS,
                names.STATUS,
                names.FAILURE_RATE,
                names.DROPPED_EVENTS,
                names.CALL_DURATION,  # bridged into the host's own reader
            ]
        ),
        "resources": ["host-app"],
        "spans": ["request", names.OPEN_SPAN, "after"],
    }
