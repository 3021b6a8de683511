"""Gateway request metrics: a counter and a duration histogram by route, provider and status.

The service's access-log middleware calls :meth:`GatewayMetrics.record` once per ``/v1/*``
request.  Unlike breaker calls (aggregated by the breakers themselves, see
``telemetry.metrics``), a gateway request costs hundreds of microseconds of HTTP work, so the
two SDK measurements (a few microseconds) are not worth an aggregation layer of their own.
The attribute dicts are cached per (route, provider, status): the set is small and bounded by
the configuration (the middleware folds unknown models into one label).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import MeterProvider

from telemetry import names
from telemetry.instrument import VERSION


class GatewayMetrics:
    """Records gateway requests on ``meter_provider``'s ``breakerd`` meter (any thread)."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(names.SCOPE, VERSION)
        self._requests = meter.create_counter(
            names.GATEWAY_REQUESTS,
            unit=names.GATEWAY_REQUESTS_UNIT,
            description=names.GATEWAY_REQUESTS_DESCRIPTION,
        )
        self._duration = meter.create_histogram(
            names.GATEWAY_DURATION,
            unit=names.GATEWAY_DURATION_UNIT,
            description=names.GATEWAY_DURATION_DESCRIPTION,
            explicit_bucket_boundaries_advisory=list(names.GATEWAY_DURATION_BOUNDS),
        )
        self._attributes: dict[tuple[str, str, int], dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"<GatewayMetrics series={len(self._attributes)}>"

    def record(self, route: str, provider: str, status: int, seconds: float) -> None:
        key = (route, provider, status)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = {
                names.GATEWAY_ROUTE: route,
                names.GATEWAY_PROVIDER: provider,
                names.HTTP_STATUS: status,
            }
        self._requests.add(1, attributes)
        self._duration.record(seconds, attributes)
