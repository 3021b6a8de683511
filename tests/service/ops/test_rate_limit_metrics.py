"""Rate limits in ``GET /metrics`` (and OTLP): the 429s each provider answered and the seconds
left of its cooldown, per provider breaker, the same numbers ``/breakers`` shows."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import MetricsData, NumberDataPoint

import telemetry
from actors import ActorSystem, ManualClock
from service.llm.cooldown import cooldown_for
from service.llm.cooldown_metrics import CooldownMetrics
from telemetry import Telemetry, names
from tests.service.http.conftest import Harness
from tests.service.ops.metrics_helpers import samples, scrape, value

pytestmark = pytest.mark.anyio


async def test_a_429_shows_as_a_rate_limited_count_and_a_cooldown(harness: Harness) -> None:
    harness.simulator.control(api="openai", error_rate=1.0, status=429, retry_after=7)
    assert (await harness.chat("solo"))[0] == 429  # the provider's own 429: counted
    for _ in range(2):  # cooling down: skipped, not asked, so not counted again
        assert (await harness.chat("chat"))[0] == 200
    snapshot = await harness.breaker(harness.a)
    _, text = await scrape(harness.http, harness.url)
    found = samples(text)

    def rate_limited(breaker: str) -> float:
        return value(found, "breakerd_llm_rate_limited_total", circuit_breaker_name=breaker)

    def remaining(breaker: str) -> float:
        return value(found, "breakerd_llm_cooldown_remaining_seconds", circuit_breaker_name=breaker)

    assert rate_limited(harness.a) == snapshot["rate_limited"] == 1
    assert 0 < remaining(harness.a) <= 7
    # The fallback served without a 429: its series are there, at zero.
    assert (rate_limited(harness.b), remaining(harness.b)) == (0, 0)


COOLDOWN_METRICS = (names.LLM_RATE_LIMITED, names.LLM_COOLDOWN_REMAINING)


def collect(tel: Telemetry) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """The cooldown instruments of the ``breakerd`` scope: unit and values by breaker name."""
    data = tel.metric_reader.get_metrics_data()  # type: ignore[attr-defined]
    assert isinstance(data, MetricsData)
    found = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != names.SCOPE:
                continue
            for metric in scope_metrics.metrics:
                if metric.name in COOLDOWN_METRICS:
                    by_name = {}
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint) and point.attributes
                        by_name[str(point.attributes[names.NAME])] = point.value
                    found[metric.name] = (metric.unit, by_name)
    return found


async def test_the_cooldown_is_read_at_collection_on_the_systems_clock() -> None:
    clock = ManualClock()
    async with ActorSystem(clock=clock) as system:
        tel = telemetry.setup_in_memory(system)
        try:
            assert tel.meter_provider is not None
            CooldownMetrics(tel.meter_provider, system)
            cooldown = cooldown_for(system, "p_client")
            cooldown.hit(3.0)
            clock.advance(1.0)
            found = collect(tel)
            assert found[names.LLM_RATE_LIMITED] == ("{response}", {"p_client": 1})
            assert found[names.LLM_COOLDOWN_REMAINING] == ("s", {"p_client": 2.0})
            clock.advance(5.0)
            cooldown.hit(None)  # no hint: the default cooldown, 5 s
            found = collect(tel)
            assert found[names.LLM_RATE_LIMITED][1] == {"p_client": 2}
            assert found[names.LLM_COOLDOWN_REMAINING][1] == {"p_client": 5.0}
        finally:
            await tel.shutdown_async()
