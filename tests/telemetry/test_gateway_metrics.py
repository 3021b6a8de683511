"""``telemetry.gateway``: the gateway's own request aggregate, read by a real SDK
``MeterProvider`` into an ``InMemoryMetricReader``, exported as the SDK instruments did."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from telemetry import names
from telemetry.gateway import GatewayMetrics

BOUNDS = names.GATEWAY_DURATION_BOUNDS
CHAT_OK = ("chat", "openai", 200)
CHAT_FAILED = ("chat", "", 502)
EMBED_OK = ("embeddings", "openai", 200)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider
    provider.shutdown()


@pytest.fixture
def gateway(provider: MeterProvider) -> GatewayMetrics:
    return GatewayMetrics(provider)


def attrs(route: str, provider: str, status: int) -> frozenset[tuple[str, object]]:
    return frozenset(
        {names.GATEWAY_ROUTE: route, names.GATEWAY_PROVIDER: provider, names.HTTP_STATUS: status}
        .items()
    )  # fmt: skip


def metrics(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """The ``breakerd`` scope's metrics of one collection, by name."""
    data = reader.get_metrics_data()
    if data is None:  # nothing at all to report
        return {}
    assert isinstance(data, MetricsData)
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        if scope_metrics.scope.name == names.SCOPE
        for metric in scope_metrics.metrics
    }


def requests(found: dict[str, Metric]) -> dict[frozenset[tuple[str, object]], int | float]:
    metric = found[names.GATEWAY_REQUESTS]
    assert isinstance(metric.data, Sum)
    points = metric.data.data_points
    assert all(isinstance(point, NumberDataPoint) for point in points)
    return {frozenset(point.attributes.items()): point.value for point in points}  # type: ignore[union-attr]


def durations(found: dict[str, Metric]) -> dict[frozenset[tuple[str, object]], HistogramDataPoint]:
    metric = found[names.GATEWAY_DURATION]
    assert isinstance(metric.data, Histogram)
    return {frozenset(point.attributes.items()): point for point in metric.data.data_points}


def sdk_histogram(values: list[float]) -> HistogramDataPoint:
    """The oracle: the same values recorded through the SDK's own explicit-bucket histogram."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        histogram = provider.get_meter("oracle").create_histogram(
            "oracle", explicit_bucket_boundaries_advisory=list(BOUNDS)
        )
        for value in values:
            histogram.record(value)
        data = reader.get_metrics_data()
        assert data is not None
        [point] = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
        assert isinstance(point, HistogramDataPoint)
        return point
    finally:
        provider.shutdown()


# Every boundary exactly, just above each, zero, and far above the last bound.
EDGE_VALUES = [0.0, *BOUNDS, *(bound * 1.000001 for bound in BOUNDS), 500.0, 86_400.0]


def test_buckets_count_sum_min_max_match_the_sdk_histogram(
    reader: InMemoryMetricReader, gateway: GatewayMetrics
) -> None:
    for value in EDGE_VALUES:
        gateway.record(*CHAT_OK, value)
    found = metrics(reader)
    point = durations(found)[attrs(*CHAT_OK)]
    oracle = sdk_histogram(EDGE_VALUES)
    assert list(point.bucket_counts) == list(oracle.bucket_counts)
    assert (point.count, point.sum, point.min, point.max) == (
        oracle.count,
        oracle.sum,
        oracle.min,
        oracle.max,
    )
    assert tuple(point.explicit_bounds) == tuple(oracle.explicit_bounds) == BOUNDS
    assert requests(found) == {attrs(*CHAT_OK): len(EDGE_VALUES)}


def test_a_value_on_a_bound_is_in_that_bounds_bucket(
    reader: InMemoryMetricReader, gateway: GatewayMetrics
) -> None:
    gateway.record(*CHAT_OK, 0.01)  # the first bound: bucket 0, (-inf, 0.01]
    gateway.record(*CHAT_OK, 1)  # bound 6: bucket 6, (0.5, 1]
    gateway.record(*CHAT_OK, 1.0000001)  # just above: bucket 7, (1, 2.5]
    gateway.record(*CHAT_OK, 120)  # the last bound: bucket 12
    gateway.record(*CHAT_OK, 120.5)  # above the last bound: the overflow bucket 13
    point = durations(metrics(reader))[attrs(*CHAT_OK)]
    expected = [0] * (len(BOUNDS) + 1)
    for bucket in (0, 6, 7, 12, 13):
        expected[bucket] = 1
    assert list(point.bucket_counts) == expected
    assert point.count == 5
    assert point.sum == pytest.approx(0.01 + 1 + 1.0000001 + 120 + 120.5)
    assert (point.min, point.max) == (0.01, 120.5)


def test_several_keys_are_separate_series(
    reader: InMemoryMetricReader, gateway: GatewayMetrics
) -> None:
    for seconds in (0.2, 0.3, 7.0):
        gateway.record(*CHAT_OK, seconds)
    gateway.record(*CHAT_FAILED, 0.04)
    gateway.record(*EMBED_OK, 0.02)
    gateway.record(*EMBED_OK, 0.02)
    found = metrics(reader)
    assert requests(found) == {attrs(*CHAT_OK): 3, attrs(*CHAT_FAILED): 1, attrs(*EMBED_OK): 2}
    points = durations(found)
    assert set(points) == {attrs(*CHAT_OK), attrs(*CHAT_FAILED), attrs(*EMBED_OK)}
    assert [(p.count, p.sum) for p in (points[attrs(*k)] for k in (CHAT_FAILED, EMBED_OK))] == [
        (1, 0.04),
        (2, 0.04),
    ]
    assert points[attrs(*CHAT_OK)].sum == pytest.approx(7.5)
    assert list(points[attrs(*EMBED_OK)].bucket_counts)[:2] == [0, 2]  # (0.01, 0.025]


def test_collections_are_cumulative(reader: InMemoryMetricReader, gateway: GatewayMetrics) -> None:
    gateway.record(*CHAT_OK, 0.2)
    first = metrics(reader)
    gateway.record(*CHAT_OK, 3.0)
    gateway.record(*CHAT_FAILED, 0.5)
    second = metrics(reader)
    third = metrics(reader)  # nothing recorded in between: the same totals again
    assert requests(first) == {attrs(*CHAT_OK): 1}
    for found in (second, third):
        assert requests(found) == {attrs(*CHAT_OK): 2, attrs(*CHAT_FAILED): 1}
        point = durations(found)[attrs(*CHAT_OK)]
        assert (point.count, point.sum, point.min, point.max) == (2, 3.2, 0.2, 3.0)
    first_point = durations(first)[attrs(*CHAT_OK)]
    third_point = durations(third)[attrs(*CHAT_OK)]
    assert third_point.start_time_unix_nano == first_point.start_time_unix_nano
    assert third_point.time_unix_nano >= first_point.time_unix_nano


def test_names_units_descriptions_and_temporality(
    reader: InMemoryMetricReader, gateway: GatewayMetrics
) -> None:
    assert metrics(reader) == {}  # no request yet: no series, no histogram
    gateway.record(*CHAT_OK, 0.2)
    found = metrics(reader)
    counter, histogram = found[names.GATEWAY_REQUESTS], found[names.GATEWAY_DURATION]
    assert (counter.unit, counter.description) == (
        names.GATEWAY_REQUESTS_UNIT,
        names.GATEWAY_REQUESTS_DESCRIPTION,
    )
    assert (histogram.unit, histogram.description) == (
        names.GATEWAY_DURATION_UNIT,
        names.GATEWAY_DURATION_DESCRIPTION,
    )
    assert isinstance(counter.data, Sum) and counter.data.is_monotonic
    assert counter.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert isinstance(histogram.data, Histogram)
    assert histogram.data.aggregation_temporality is AggregationTemporality.CUMULATIVE


def test_every_gateway_metrics_of_a_provider_counts_into_the_same_series(
    reader: InMemoryMetricReader, provider: MeterProvider, gateway: GatewayMetrics
) -> None:
    other = GatewayMetrics(provider)
    gateway.record(*CHAT_OK, 0.2)
    other.record(*CHAT_OK, 0.3)
    found = metrics(reader)
    assert requests(found) == {attrs(*CHAT_OK): 2}
    assert durations(found)[attrs(*CHAT_OK)].count == 2


def test_a_collection_never_sees_half_a_request(
    reader: InMemoryMetricReader, gateway: GatewayMetrics
) -> None:
    # One value only, so a consistent point has sum == count * value and min == max == value;
    # a collection between two of record()'s updates would break that.  Many series give a
    # collection many chances to be interrupted, and a tiny switch interval makes the threads
    # trade the GIL as often as they can.
    value, keys, rounds = 0.5, 16, 500
    statuses = range(200, 200 + keys)
    done = threading.Event()

    def write() -> None:
        try:
            for _ in range(rounds):
                for status in statuses:
                    gateway.record("chat", "openai", status, value)
        finally:
            done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=write)
    seen: dict[int, int] = {}
    try:
        writer.start()
        while not done.is_set():
            found = metrics(reader)
            for key, point in (durations(found) if found else {}).items():
                assert sum(point.bucket_counts) == point.count
                assert point.sum == point.count * value
                assert point.min == point.max == value
                status = dict(key)[names.HTTP_STATUS]
                assert isinstance(status, int)
                assert point.count >= seen.get(status, 0)  # cumulative
                seen[status] = point.count
    finally:
        sys.setswitchinterval(interval)
        writer.join()
    found = metrics(reader)
    assert requests(found) == {attrs("chat", "openai", status): rounds for status in statuses}
    assert {point.count for point in durations(found).values()} == {rounds}


def test_a_collection_in_the_middle_of_a_record_sees_all_of_it_or_nothing(
    reader: InMemoryMetricReader, gateway: GatewayMetrics
) -> None:
    # A duration that starts a collection on another thread whenever record() computes with
    # it (bisecting, adding, comparing): a collection at every step of record().  Each one
    # must see the request either not at all or entirely.
    collected: list[dict[str, Metric]] = []
    collectors: list[threading.Thread] = []

    def collect_meanwhile() -> None:
        collector = threading.Thread(target=lambda: collected.append(metrics(reader)))
        collectors.append(collector)
        collector.start()
        # Ample time for a collection that does not wait for record() to finish in the middle
        # of it; one that waits finishes afterwards, whatever this timeout.
        collector.join(timeout=0.05)

    class Interrupting(float):
        def __radd__(self, other: float) -> float:  # type: ignore[override, misc]
            collect_meanwhile()
            return float(self) + other

        def __lt__(self, other: float) -> bool:  # type: ignore[override]
            collect_meanwhile()
            return float(self) < other

        def __gt__(self, other: float) -> bool:  # type: ignore[override]
            collect_meanwhile()
            return float(self) > other

    gateway.record(*CHAT_OK, 0.5)
    gateway.record(*CHAT_OK, Interrupting(0.25))
    for collector in collectors:
        collector.join()
    assert len(collected) == len(collectors) >= 4  # bisect, sum, min and max at least
    seen = set()
    for found in collected:
        point = durations(found)[attrs(*CHAT_OK)]
        seen.add((point.count, point.sum, point.min, point.max))
        assert requests(found) == {attrs(*CHAT_OK): point.count}
    assert seen <= {(1, 0.5, 0.5, 0.5), (2, 0.75, 0.25, 0.5)}


def test_a_provider_without_sdk_readers_records_without_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="telemetry"):
        gateway = GatewayMetrics(NoOpMeterProvider())
    assert names.GATEWAY_DURATION in caplog.text
    gateway.record(*CHAT_OK, 0.2)
