"""End to end over real OTLP: ``telemetry.setup`` configured by OTEL_* variables, the SDK's
OTLP exporters (http/protobuf and grpc), and receivers on 127.0.0.1 that decode what arrives."""

from __future__ import annotations

import pytest

import telemetry
from actors import ActorSystem, ManualClock
from telemetry import names
from telemetry.metrics import EXPORT_BOUNDS
from tests.telemetry import flows
from tests.telemetry.receivers import GrpcReceiver, HttpReceiver, Received, attributes, points


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_an_outage_arrives_at_an_otlp_collector(
    protocol: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, unique_name: str
) -> None:
    collector = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    async with collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "breakerd-test")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # flushes only
        async with ActorSystem(clock=clock) as system:
            tel = telemetry.setup(system, use_global=False, set_global=False)
            assert tel.enabled and tel.tracer_provider is not None
            tracer = tel.tracer_provider.get_tracer("tests")
            outage = await flows.drive_outage(system, clock, tracer, unique_name)
            assert await tel.force_flush_async()
            received = collector.received
            check_metrics(received, unique_name)
            check_spans(received, unique_name, outage)
            await tel.shutdown_async()
    assert {resource.get("service.name") for resource in received.resources()} == {"breakerd-test"}


def check_metrics(received: Received, name: str) -> None:
    metrics = received.latest_metrics(names.SCOPE)
    expected = flows.expected_points(name)
    assert set(metrics) == {*expected, names.CALL_DURATION}
    for metric_name, expected_values in expected.items():
        assert points(metrics[metric_name]) == expected_values, metric_name
    units = {metric.name: metric.unit for metric in metrics.values()}
    assert units == {
        names.CALLS: "{call}",
        names.TRANSITIONS: "{transition}",
        names.STATUS: "1",
        names.FAILURE_RATE: "1",
        names.DROPPED_EVENTS: "{event}",
        names.CALL_DURATION: "s",
    }
    assert metrics[names.CALLS].sum.is_monotonic
    assert not metrics[names.STATUS].sum.is_monotonic
    duration = metrics[names.CALL_DURATION]
    assert duration.histogram.aggregation_temporality == 2  # cumulative
    [(key, point)] = points(duration).items()
    assert dict(key) == {names.NAME: name}
    assert point.count == flows.EXPECTED_DURATION_COUNT
    assert point.sum == pytest.approx(flows.EXPECTED_DURATION_SUM)
    assert list(point.bucket_counts) == flows.expected_buckets()
    assert list(point.explicit_bounds) == list(EXPORT_BOUNDS)
    assert not point.HasField("min")  # the buckets cannot tell: left out, as OTLP allows


def check_spans(received: Received, name: str, outage: flows.Outage) -> None:
    assert names.SCOPE in received.span_scopes()
    [span] = received.spans(names.OPEN_SPAN)
    assert span.parent_span_id == b""  # a root span, not a child of whoever woke the actor
    assert abs(span.start_time_unix_nano - flows.ns(outage.opened_at)) < 1_000
    assert abs(span.end_time_unix_nano - flows.ns(outage.closed_at)) < 1_000
    assert attributes(span.attributes) == {
        names.NAME: name,
        names.TRANSITION_FROM: "closed",
        names.TRANSITION_REASON: "failure_threshold",
        names.FORCED: False,
        names.CONSECUTIVE_FAILURES: 2,
        names.FAILED_CALLS: 2,
        names.TOTAL_CALLS: 3,
        names.CLOSE_REASON: "probes_succeeded",
        names.REJECTED_CALLS: 1,
        names.HALF_OPEN_ATTEMPTS: 1,
        names.PROBE_SUCCESSES: 1,
        names.PROBE_FAILURES: 0,
    }
    events = [(event.name, attributes(event.attributes)) for event in span.events]
    assert events == [
        (
            names.STATE_CHANGE_EVENT,
            {
                names.TRANSITION_FROM: "open",
                names.TRANSITION_TO: "half_open",
                names.TRANSITION_REASON: "timeout_elapsed",
            },
        ),
        (names.PROBE_EVENT, {names.OUTCOME: "success", names.PROBE_COUNT: 1}),
        (
            names.STATE_CHANGE_EVENT,
            {
                names.TRANSITION_FROM: "half_open",
                names.TRANSITION_TO: "closed",
                names.TRANSITION_REASON: "probes_succeeded",
            },
        ),
    ]
    assert abs(span.events[0].time_unix_nano - flows.ns(outage.half_open_at)) < 1_000
    [request] = received.spans("request")
    [rejected] = request.events
    assert rejected.name == names.REJECTED_EVENT
    assert attributes(rejected.attributes) == {
        names.NAME: name,
        names.STATE: "open",
        names.RETRY_AFTER: pytest.approx(flows.CONFIG.timeout_duration),
    }
