"""Metrics through the real SDK into an ``InMemoryMetricReader`` (``telemetry.setup_in_memory``)."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData

import telemetry
from actors import ActorSystem, ManualClock
from actors.stats import DURATION_BOUNDS
from telemetry import Telemetry, names
from telemetry.metrics import EXPORT_BOUNDS, coarsen
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


def collect(tel: Telemetry) -> flows.Points:
    """The ``breakerd`` scope's metrics from the in-memory reader, as comparable points."""
    assert tel.force_flush()
    data = tel.metric_reader.get_metrics_data()  # type: ignore[attr-defined]
    assert isinstance(data, MetricsData)
    found: flows.Points = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != names.SCOPE:
                continue
            for metric in scope_metrics.metrics:
                found[metric.name] = {
                    frozenset(point.attributes.items()): (
                        point if isinstance(point, HistogramDataPoint) else point.value
                    )
                    for point in metric.data.data_points
                }
    return found


@pytest.mark.anyio
async def test_outage_metrics(
    system: ActorSystem, clock: ManualClock, tel: Telemetry, unique_name: str
) -> None:
    assert tel.tracer_provider is not None
    await flows.drive_outage(system, clock, tel.tracer_provider.get_tracer("t"), unique_name)
    found = collect(tel)
    for metric_name, expected in flows.expected_points(unique_name).items():
        assert found[metric_name] == expected, metric_name
    [(key, point)] = found[names.CALL_DURATION].items()
    assert dict(key) == {names.NAME: unique_name}
    assert (point.count, list(point.bucket_counts)) == (
        flows.EXPECTED_DURATION_COUNT,
        flows.expected_buckets(),
    )
    assert point.sum == pytest.approx(flows.EXPECTED_DURATION_SUM)


@pytest.mark.anyio
async def test_counters_are_cumulative_across_collections_and_resets(
    system: ActorSystem, tel: Telemetry, unique_name: str
) -> None:
    breaker = system.breaker(unique_name, flows.CONFIG)
    breaker.call(lambda: None)
    await breaker.metrics_async()
    first = collect(tel)[names.CALLS]
    await breaker.reset_async()  # the breaker's own counts restart; exported counters must not
    breaker.call(lambda: None)
    await breaker.metrics_async()
    second = collect(tel)
    success = flows.pairs(**{names.NAME: unique_name, names.OUTCOME: "success"})
    assert (first[success], second[names.CALLS][success]) == (1, 2)
    # The histogram keeps the first call through the reset (the second is not timed: the plain
    # path times its first call, then one in 16).
    assert [point.count for point in second[names.CALL_DURATION].values()] == [1]


@pytest.mark.anyio
async def test_status_covers_registered_breakers_without_events(
    system: ActorSystem, tel: Telemetry
) -> None:
    system.breaker("quiet", flows.CONFIG)
    held = system.breaker("held", flows.CONFIG)
    await held.force_open_async()
    status = collect(tel)[names.STATUS]
    current = {
        dict(key)[names.NAME]: dict(key)[names.STATE] for key, value in status.items() if value
    }
    assert current == {"quiet": "closed", "held": "open"}
    assert len(status) == 6  # every state of both, 1 for the current one and 0 for the others


@pytest.mark.anyio
async def test_status_of_an_unregistered_breaker_follows_its_events(
    system: ActorSystem, tel: Telemetry
) -> None:
    loose = system.create_breaker("loose", flows.CONFIG)  # not in the registry
    await loose.force_open_async()
    await loose.metrics_async()
    status = collect(tel)[names.STATUS]
    assert status[flows.pairs(**{names.NAME: "loose", names.STATE: "open"})] == 1


@pytest.mark.anyio
async def test_dropped_bus_events_are_counted(system: ActorSystem, tel: Telemetry) -> None:
    import anyio

    seen: list[object] = []
    system.bus.subscribe(seen.append, buffer=1)  # a sync subscriber with room for one event
    one, two = system.breaker("one"), system.breaker("two")
    one.call(lambda: None)
    two.call(lambda: None)
    await anyio.sleep(0)  # one loop turn drains both breakers: the second event overflows
    assert system.bus.dropped == 1
    assert collect(tel)[names.DROPPED_EVENTS] == {frozenset(): 1}


class _Link:
    """A cluster link that only reports a status (its other duties are not telemetry's)."""

    status = "connecting"

    def attached(self, system: ActorSystem) -> None:
        pass

    async def run(self, system: ActorSystem) -> None:
        import anyio

        await anyio.sleep_forever()

    def request_probe(self, breaker: str, generation: int) -> None:
        raise AssertionError("no break ends in this test")

    def breaker_joined(self, breaker: str) -> None:
        pass


@pytest.mark.anyio
async def test_cluster_link_status_is_exported_only_in_cluster_mode(
    system: ActorSystem, tel: Telemetry
) -> None:
    assert names.CLUSTER_LINK not in collect(tel)
    link = _Link()
    system.attach_cluster(link)
    status = collect(tel)[names.CLUSTER_LINK]
    assert status == {
        frozenset({(names.LINK_STATUS, "connected")}): 0,
        frozenset({(names.LINK_STATUS, "connecting")}): 1,
        frozenset({(names.LINK_STATUS, "disconnected")}): 0,
    }
    link.status = "connected"
    assert collect(tel)[names.CLUSTER_LINK][frozenset({(names.LINK_STATUS, "connected")})] == 1
    system.detach_cluster()


@pytest.mark.anyio
async def test_one_loop_turn_of_many_breakers_drops_nothing(
    system: ActorSystem, tel: Telemetry
) -> None:
    import anyio

    # More breakers than the bus's default buffer, fewer than the SDK's default cardinality
    # limit of 2,000 series per metric (the failure-rate gauge has one series per breaker).
    breakers = [system.breaker(f"busy-{index}") for index in range(1_100)]
    for breaker in breakers:
        breaker.call(int)
    await anyio.sleep(0)  # one dispatch drains every breaker before the telemetry actor
    assert system.bus.dropped == 0
    found = collect(tel)
    assert len(found[names.FAILURE_RATE]) == 1_100
    assert sum(point.count for point in found[names.CALL_DURATION].values()) == 1_100


@pytest.mark.anyio
async def test_after_shutdown_callbacks_report_nothing(
    system: ActorSystem, unique_name: str
) -> None:
    tel = telemetry.setup_in_memory(system)
    system.breaker(unique_name).call(lambda: None)
    await system.breaker(unique_name).metrics_async()
    assert names.CALLS in collect(tel)
    instrumentation = tel.instrumentation
    assert instrumentation is not None and instrumentation.metrics is not None
    await tel.shutdown_async()
    assert instrumentation.metrics.closed
    assert instrumentation.metrics.duration_points() == []
    assert not system.bus.subscriptions  # detached: breakers build no CallsRecorded now


def test_coarsen_puts_each_fine_bucket_where_its_durations_belong() -> None:
    for index in range(len(DURATION_BOUNDS) + 1):
        fine = [0] * (len(DURATION_BOUNDS) + 1)
        fine[index] = 5
        coarse = coarsen(fine)
        assert sum(coarse) == 5
        # A duration at the fine bucket's upper bound belongs to the same coarse bucket.
        where = bisect_left(EXPORT_BOUNDS, DURATION_BOUNDS[index]) if index < len(fine) - 1 else -1
        assert coarse[where] == 5, index


def test_export_bounds_double() -> None:
    ratios = [b / a for a, b in itertools.pairwise(EXPORT_BOUNDS)]
    assert ratios == pytest.approx([2.0] * (len(EXPORT_BOUNDS) - 1))
    assert EXPORT_BOUNDS[0] == pytest.approx(1e-6)
    assert set(EXPORT_BOUNDS) <= set(DURATION_BOUNDS)


@pytest.mark.anyio
async def test_a_removed_breaker_is_no_longer_exported(
    system: ActorSystem, tel: Telemetry, unique_name: str
) -> None:
    def exported() -> set[str]:
        return {
            dict(key).get(names.NAME, "")
            for points in collect(tel).values()
            for key in points
            if dict(key).get(names.NAME) == unique_name
        }

    breaker = system.breaker(unique_name, flows.CONFIG)
    breaker.call(lambda: 1)
    await breaker.metrics_async()
    assert exported() == {unique_name}
    system.remove_breaker(unique_name)
    assert exported() == set()
