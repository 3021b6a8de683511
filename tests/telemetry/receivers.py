"""Real OTLP receivers for tests, on 127.0.0.1 with ephemeral ports.

- :class:`HttpReceiver`: an aiohttp app answering ``POST /v1/metrics`` and ``/v1/traces`` with
  the protobuf bodies decoded by ``opentelemetry-proto`` (gzip bodies are inflated first).
- :class:`GrpcReceiver`: a ``grpc.aio`` server with the ``opentelemetry-proto`` service stubs.

Both keep every request they got in :class:`Received`, which flattens them for assertions.  The
exporters are synchronous, so tests flush from a worker thread while the receiver runs on the
test's loop; by the time a flush returns, its requests have been answered and recorded.
"""

from __future__ import annotations

import gzip
from types import TracebackType
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


class Received:
    """Every export request a receiver got, in arrival order."""

    def __init__(self) -> None:
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def resources(self) -> list[dict[str, Any]]:
        found = [
            attributes(rm.resource.attributes) for r in self.metrics for rm in r.resource_metrics
        ]
        found += [
            attributes(rs.resource.attributes) for r in self.traces for rs in r.resource_spans
        ]
        return found

    def latest_metrics(self, scope: str) -> dict[str, Metric]:
        """Each metric of ``scope`` as last exported (the metrics are cumulative)."""
        latest: dict[str, Metric] = {}
        for request in self.metrics:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    if scope_metrics.scope.name == scope:
                        for metric in scope_metrics.metrics:
                            latest[metric.name] = metric
        return latest

    def spans(self, name: str | None = None) -> list[Span]:
        return [
            span
            for request in self.traces
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
            if name is None or span.name == name
        ]

    def span_scopes(self) -> set[str]:
        return {
            scope_spans.scope.name
            for request in self.traces
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
        }


def points(metric: Metric) -> dict[frozenset[tuple[str, Any]], Any]:
    """Data points of a sum, gauge or histogram, keyed by their attributes.

    Number points map to their value; histogram points to the point itself."""
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    found: dict[frozenset[tuple[str, Any]], Any] = {}
    for point in data.data_points:
        key = frozenset(attributes(point.attributes).items())
        found[key] = point if kind == "histogram" else value_of(point)
    return found


def value_of(point: Any) -> Any:
    return getattr(point, point.WhichOneof("value"))


class HttpReceiver:
    """``async with HttpReceiver() as receiver``: ``receiver.endpoint`` is its base URL."""

    def __init__(self) -> None:
        self.received = Received()
        self.endpoint = ""
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        message = metrics_service_pb2.ExportMetricsServiceRequest()
        message.ParseFromString(await self._body(request))
        self.received.metrics.append(message)
        reply = metrics_service_pb2.ExportMetricsServiceResponse()
        return web.Response(body=reply.SerializeToString(), content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await self._body(request))
        self.received.traces.append(message)
        reply = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(body=reply.SerializeToString(), content_type="application/x-protobuf")

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        if request.content_type != "application/x-protobuf":
            raise web.HTTPUnsupportedMediaType(text=request.content_type)
        body = await request.read()
        return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body

    async def __aenter__(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_post("/v1/metrics", self._metrics)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    async def Export(self, request: Any, context: Any) -> Any:  # the stub's name
        self.received.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    async def Export(self, request: Any, context: Any) -> Any:  # the stub's name
        self.received.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver:
    """``async with GrpcReceiver() as receiver``: ``receiver.endpoint`` is ``http://host:port``
    (the scheme tells the exporter to use an insecure channel)."""

    def __init__(self) -> None:
        self.received = Received()
        self.endpoint = ""
        self._server: grpc.aio.Server | None = None

    async def __aenter__(self) -> GrpcReceiver:
        server = grpc.aio.server()
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self.received), server
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(self.received), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        await self._server.stop(grace=None)
