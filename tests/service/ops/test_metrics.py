"""``GET /metrics``: breaker and gateway metrics through the OpenTelemetry pipeline, in the
Prometheus text format and in OpenMetrics, with numbers that match ``/breakers``."""

from __future__ import annotations

import aiohttp
import pytest

from actors.system import ActorSystem
from service.config import parse_config
from telemetry.setup import prometheus_registry, setup
from tests.service.http.conftest import Harness, config_text, serving
from tests.service.ops.metrics_helpers import (
    OUTCOME_FIELDS,
    outage_cycle,
    samples,
    scrape,
    total,
    value,
)

pytestmark = pytest.mark.anyio


async def test_metrics_count_what_breakers_report_after_an_outage_cycle(quick: Harness) -> None:
    snapshot = await outage_cycle(quick)
    content_type, text = await scrape(quick.http, quick.url)
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(text)
    name = quick.a
    for outcome, field in OUTCOME_FIELDS.items():
        counted = value(
            found, "circuit_breaker_calls_total",
            circuit_breaker_name=name, circuit_breaker_call_outcome=outcome,
        )  # fmt: skip
        assert counted == snapshot[field], outcome
    # Two failures open it; it rejects until the break is over (the recovery poll included).
    assert snapshot["failed_calls"] == 2 and snapshot["rejected_calls"] >= 2
    states = {
        state: value(found, "circuit_breaker_status", circuit_breaker_name=name,
                     circuit_breaker_state=state)
        for state in ("closed", "open", "half_open")
    }  # fmt: skip
    assert states == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    opened = value(
        found, "circuit_breaker_transitions_total",
        circuit_breaker_name=name, circuit_breaker_transition_to="open",
    )  # fmt: skip
    assert opened == 1.0

    # The gateway's own view: requests by route, serving provider and status.
    tag = quick.tag
    served = value(
        found, "breakerd_gateway_requests_total",
        breakerd_route="solo", breakerd_provider=f"{tag}a", http_response_status_code="200",
    )  # fmt: skip
    assert served == snapshot["successful_calls"]
    # Failed and rejected requests: no provider served them.
    failed = total(
        found, "breakerd_gateway_requests_total",
        breakerd_route="solo", http_response_status_code="502",
    )  # fmt: skip
    assert failed == 2
    rejected = value(
        found, "breakerd_gateway_requests_total",
        breakerd_route="solo", breakerd_provider="", http_response_status_code="503",
    )  # fmt: skip
    assert rejected == snapshot["rejected_calls"]
    assert value(
        found, "breakerd_gateway_request_duration_seconds_count",
        breakerd_route="solo", breakerd_provider=f"{tag}a", http_response_status_code="200",
    ) == served  # fmt: skip


async def test_openmetrics_when_the_scraper_asks_for_it(harness: Harness) -> None:
    assert (await harness.chat("chat"))[0] == 200
    content_type, text = await scrape(
        harness.http, harness.url, accept="application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    assert "circuit_breaker_calls_total{" in text or "circuit_breaker_calls_total " in text


async def scrape_status(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(f"{url}/metrics") as response:
        return response.status, await response.text()


async def test_no_metrics_route_when_turned_off(tag: str, http: aiohttp.ClientSession) -> None:
    text = config_text(tag) + "\n[metrics]\nprometheus = false\n"
    async with serving(parse_config(text, environ={}), {}) as service:
        status, _ = await scrape_status(http, service.url)
        assert status == 404


def test_otel_metrics_exporter_prometheus_builds_a_prometheus_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Beside a push exporter (console: OTLP would try to reach a collector at shutdown).
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console,prometheus")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    system = ActorSystem(_floating=True)
    telemetry = setup(system, use_global=False, set_global=False)
    try:
        kinds = sorted(type(reader).__name__ for reader in telemetry.metric_readers)
        assert kinds == ["PeriodicExportingMetricReader", "PrometheusMetricReader"]
        assert prometheus_registry(telemetry) is not None
    finally:
        telemetry.shutdown()
