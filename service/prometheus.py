"""``GET /metrics``: the Prometheus exposition of the service's OpenTelemetry metrics.

The metrics are the ones OTLP exports (breaker calls, states, transitions, durations, the
gateway's requests), read through an ``opentelemetry-exporter-prometheus`` reader on a private
``prometheus_client`` registry (``telemetry.setup.prometheus_registry``).  A scrape settles the
telemetry actor (so that it has applied every event published so far), then renders the
registry in the format the ``Accept`` header asks for: OpenMetrics when a scraper says it
understands it, the Prometheus text format otherwise.

The hot path is not involved: breakers aggregate as always, and rendering (the SDK's
collection, observable callbacks that copy tallies) runs on a worker thread, off the loop.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from telemetry.setup import Telemetry, prometheus_registry


class MetricsEndpoint:
    """The ``/metrics`` handler over ``telemetry``'s Prometheus reader.

    Raises ``ValueError`` when ``telemetry`` has no Prometheus reader.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        registry: Any = prometheus_registry(telemetry)
        if registry is None:
            raise ValueError(f"{telemetry!r} has no Prometheus reader")
        self._registry = registry
        self._telemetry = telemetry

    def __repr__(self) -> str:
        return f"<MetricsEndpoint {self._telemetry!r}>"

    async def handle(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        instrumentation = self._telemetry.instrumentation
        if instrumentation is not None:
            await instrumentation.settle_async()
        body: bytes = await anyio.to_thread.run_sync(encode, self._registry)
        response = web.Response(body=body)
        # Set whole: aiohttp's content_type setter would drop the version parameter.
        response.headers["Content-Type"] = content_type
        return response
