"""Turning telemetry on: SDK providers, OTLP exporters, and their orderly shutdown.

This is the only module of breakerd that imports the OpenTelemetry SDK or an exporter; the rest
talks to the API (see ``telemetry.instrument``).  Two entry points:

- :func:`setup` for applications (``python -m service`` calls it).  For each signal it uses the
  host application's global provider if one is installed (embedding); otherwise it builds one
  from the standard ``OTEL_*`` environment variables with OTLP exporters (``http/protobuf`` or
  ``grpc``), or from the reader / exporter passed in.  ``OTEL_SDK_DISABLED=true`` turns
  everything off: nothing is subscribed, nothing is exported, no call gets slower.
  ``OTEL_METRICS_EXPORTER=prometheus`` (alone or beside ``otlp``), or ``prometheus=True``,
  adds a pull reader: :func:`prometheus_registry` gives the ``CollectorRegistry`` that the
  service's ``GET /metrics`` renders (a private one: never ``prometheus_client.REGISTRY``).
- :func:`setup_in_memory` for benchmarks and tests: an ``InMemoryMetricReader`` and an
  ``InMemorySpanExporter``, never installed globally.

Both return a :class:`Telemetry` handle: ``force_flush()`` / ``shutdown()`` (and ``_async``
twins; also a context manager).  Shut it down when the actor system stops: it ends running
outage spans, flushes, and shuts down the providers it built (never a host's).

The duration histogram bridge
-----------------------------
Breakers hand over call durations already bucketed (``CallsRecorded.duration_buckets``), and
the metrics API cannot take pre-bucketed counts: its only way in is ``Histogram.record()`` once
per value, which is exactly the per-call SDK cost to avoid.  The specification's answer is a
``MetricProducer`` registered on the reader, which the Python SDK (1.45) does not implement.
So :func:`attach_duration_histogram` emulates one: it wraps the reader's collect callback (set
by the ``MeterProvider`` on registration) so that each collection returns the SDK's metrics plus
a cumulative ``circuit_breaker.call.duration`` histogram built from the telemetry actor's
tallies, in the ``breakerd`` scope.  :func:`attach_histogram` adds other histograms aggregated
outside the SDK to the same bridge (the gateway's request durations, ``telemetry.gateway``).
This touches two SDK internals (``reader._collect`` and ``_set_collect_callback``);
``tests/telemetry`` exercises it against real OTLP receivers so an SDK upgrade that moves them
fails loudly.  The bridged histograms are always cumulative.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, cast

import anyio.to_thread
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from actors.errors import ActorSystemClosedError, ConfigurationError
from actors.system import ActorSystem
from telemetry import names
from telemetry.instrument import VERSION, Instrumentation, instrument
from telemetry.metrics import EXPORT_BOUNDS, BreakerMetrics
from telemetry.tracing import check_call_span_ratio

logger = logging.getLogger("telemetry")

DEFAULT_SERVICE_NAME = "breakerd"
PROTOCOLS = ("http/protobuf", "grpc")
_SCOPE = InstrumentationScope(names.SCOPE, VERSION)


class Telemetry:
    """What :func:`setup` turned on; flush it, shut it down.

    ``enabled`` is False when the SDK is disabled or no signal has an exporter.
    ``metric_readers`` / ``span_exporters`` are the ones built or passed in (empty when a
    host's providers are used).
    """

    def __init__(
        self,
        instrumentation: Instrumentation | None = None,
        *,
        meter_provider: metrics_api.MeterProvider | None = None,
        tracer_provider: trace_api.TracerProvider | None = None,
        owned: Sequence[MeterProvider | TracerProvider] = (),
        metric_readers: Sequence[MetricReader] = (),
        span_exporters: Sequence[SpanExporter] = (),
        bridged: Sequence[MetricReader] = (),
    ) -> None:
        self.instrumentation = instrumentation
        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.metric_readers = tuple(metric_readers)
        self.span_exporters = tuple(span_exporters)
        self._owned = tuple(owned)
        self._bridged = tuple(bridged)
        self._shut_down = False

    def __repr__(self) -> str:
        if not self.enabled:
            return "<Telemetry disabled>"
        signals = [
            signal
            for signal, provider in (
                ("metrics", self.meter_provider),
                ("traces", self.tracer_provider),
            )
            if provider is not None
        ]
        state = "shut down" if self._shut_down else "running"
        return f"<Telemetry {'+'.join(signals)} owned={len(self._owned)} {state}>"

    @property
    def enabled(self) -> bool:
        return self.instrumentation is not None

    @property
    def metric_reader(self) -> MetricReader:
        """The first metric reader (e.g. the ``InMemoryMetricReader`` of setup_in_memory)."""
        return self.metric_readers[0]

    @property
    def span_exporter(self) -> SpanExporter:
        """The first span exporter (e.g. the ``InMemorySpanExporter`` of setup_in_memory)."""
        return self.span_exporters[0]

    # -- flushing -----------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Apply every event published so far, then export.  Blocks on the exporters: from a
        coroutine, use :meth:`force_flush_async`.  True when every provider flushed."""
        if self.instrumentation is None:
            return True
        # Nothing runs on a closed system: what was applied is all there is.
        with contextlib.suppress(ActorSystemClosedError):
            self.instrumentation.settle()
        return self._flush_providers(timeout_millis)

    async def force_flush_async(self, timeout_millis: int = 10_000) -> bool:
        if self.instrumentation is None:
            return True
        with contextlib.suppress(ActorSystemClosedError):
            await self.instrumentation.settle_async()
        return await anyio.to_thread.run_sync(self._flush_providers, timeout_millis)

    def _flush_providers(self, timeout_millis: int) -> bool:
        flushed = True
        for provider in (self.meter_provider, self.tracer_provider):
            flush: Callable[[int], bool] | None = getattr(provider, "force_flush", None)
            if flush is not None:
                flushed = bool(flush(timeout_millis)) and flushed
        return flushed

    # -- shutting down ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Detach from the actor system (ending running outage spans), export what is left,
        and shut down the providers :func:`setup` built (never a host's).  Idempotent; blocks
        on the exporters: from a coroutine, use :meth:`shutdown_async`."""
        if self._shut_down or self.instrumentation is None:
            return
        self._shut_down = True
        self.instrumentation.detach()
        self._shutdown_providers()
        self.instrumentation.close()

    async def shutdown_async(self) -> None:
        if self._shut_down or self.instrumentation is None:
            return
        self._shut_down = True
        await self.instrumentation.detach_async()
        await anyio.to_thread.run_sync(self._shutdown_providers)
        await self.instrumentation.close_async()

    def _shutdown_providers(self) -> None:
        # The last export happens here, while the metric callbacks still report.
        self._flush_providers(10_000)
        metrics = self.instrumentation.metrics if self.instrumentation is not None else None
        if metrics is not None:
            for reader in self._bridged:
                detach_duration_histogram(reader, metrics)
        for provider in self._owned:
            provider.shutdown()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Telemetry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown_async()


# -- entry points -----------------------------------------------------------------------------


def setup(
    system: ActorSystem | None = None,
    *,
    service_name: str | None = None,
    protocol: str | None = None,
    endpoint: str | None = None,
    metric_reader: MetricReader | None = None,
    span_exporter: SpanExporter | None = None,
    call_span_ratio: float = 0.0,
    use_global: bool = True,
    set_global: bool = True,
    prometheus: bool = False,
    from_env: bool = True,
) -> Telemetry:
    """Turn telemetry on for ``system`` (default: the process-wide actor system).

    Per signal: a host application's global provider if one is installed and ``use_global``;
    otherwise a new SDK provider with ``metric_reader`` / ``span_exporter`` if given, else with
    the exporters named by ``OTEL_METRICS_EXPORTER`` / ``OTEL_TRACES_EXPORTER`` (``otlp``, the
    default, ``console`` or ``none``).  OTLP exporters read the standard variables themselves
    (endpoint, headers, timeout, compression, certificates); ``protocol`` and ``endpoint``
    (the base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``) override the environment.  The resource
    comes from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, with ``service_name``
    taking precedence and ``breakerd`` as the fallback.  Providers built here are installed as
    the global ones when ``set_global`` (possible once per process).

    ``call_span_ratio`` in [0, 1] samples per-call spans for :func:`telemetry.traced`
    functions.  ``prometheus`` adds a Prometheus reader to whatever else is built;
    ``from_env`` False builds no exporter from ``OTEL_*_EXPORTER`` (only the ones passed in
    and the Prometheus reader).  Raises :class:`~actors.errors.ConfigurationError` for an
    unsupported protocol or exporter name.  Call it from any thread, before or after the
    system starts.
    """
    check_call_span_ratio(call_span_ratio)  # before anything is built
    if _env_flag("OTEL_SDK_DISABLED"):
        logger.info("OTEL_SDK_DISABLED is set: breakerd telemetry stays off")
        return Telemetry()
    host_meters = _host_meter_provider() if use_global else None
    host_tracers = _host_tracer_provider() if use_global else None
    metric_plan = [] if host_meters or metric_reader or not from_env else _plan("metrics", protocol)
    trace_plan = [] if host_tracers or span_exporter or not from_env else _plan("traces", protocol)
    if prometheus and host_meters is None and "prometheus" not in metric_plan:
        metric_plan.append("prometheus")
    resource = _resource(service_name)
    readers: list[MetricReader] = []
    if host_meters is None:
        readers = [metric_reader] if metric_reader else _metric_readers(metric_plan, endpoint)
    exporters: list[SpanExporter] = []
    if host_tracers is None:
        exporters = [span_exporter] if span_exporter else _span_exporters(trace_plan, endpoint)
    processors: list[SpanProcessor] = [BatchSpanProcessor(exporter) for exporter in exporters]
    return _build(
        system,
        resource,
        readers=readers,
        span_exporters=exporters,
        span_processors=processors,
        host_meters=host_meters,
        host_tracers=host_tracers,
        call_span_ratio=call_span_ratio,
        set_global=set_global,
        shutdown_on_exit=True,
    )


def setup_in_memory(
    system: ActorSystem | None = None, *, call_span_ratio: float = 0.0
) -> Telemetry:
    """Telemetry into an ``InMemoryMetricReader`` (``.metric_reader``) and an
    ``InMemorySpanExporter`` (``.span_exporter``, fed synchronously), for benchmarks and tests.

    A real exporter pipeline minus the network: what ``make bench`` measures for the
    "telemetry on" row.  Never installed globally, ignores the environment.
    """
    check_call_span_ratio(call_span_ratio)
    exporter = InMemorySpanExporter()
    return _build(
        system,
        Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME}),
        readers=[InMemoryMetricReader()],
        span_exporters=[exporter],
        span_processors=[SimpleSpanProcessor(exporter)],
        host_meters=None,
        host_tracers=None,
        call_span_ratio=call_span_ratio,
        set_global=False,
        # Nothing to flush at exit, and a benchmark may set up thousands of these.
        shutdown_on_exit=False,
    )


def _build(
    system: ActorSystem | None,
    resource: Resource,
    *,
    readers: list[MetricReader],
    span_exporters: list[SpanExporter],
    span_processors: list[SpanProcessor],
    host_meters: metrics_api.MeterProvider | None,
    host_tracers: trace_api.TracerProvider | None,
    call_span_ratio: float,
    set_global: bool,
    shutdown_on_exit: bool,
) -> Telemetry:
    owned: list[MeterProvider | TracerProvider] = []
    meter_provider: metrics_api.MeterProvider | None = host_meters
    tracer_provider: trace_api.TracerProvider | None = host_tracers
    if meter_provider is None and readers:
        sdk_meters = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=shutdown_on_exit
        )
        owned.append(sdk_meters)
        meter_provider = sdk_meters
        if set_global:
            _install(metrics_api.set_meter_provider, sdk_meters)
    if tracer_provider is None and span_processors:
        sdk_tracers = TracerProvider(resource=resource, shutdown_on_exit=shutdown_on_exit)
        for processor in span_processors:
            sdk_tracers.add_span_processor(processor)
        owned.append(sdk_tracers)
        tracer_provider = sdk_tracers
        if set_global:
            _install(trace_api.set_tracer_provider, sdk_tracers)
    if meter_provider is None and tracer_provider is None:
        logger.info("no metric reader and no span exporter: breakerd telemetry stays off")
        return Telemetry()
    instrumentation = instrument(
        system,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        metrics=meter_provider is not None,
        traces=tracer_provider is not None,
        call_span_ratio=call_span_ratio,
    )
    bridged: list[MetricReader] = []
    if instrumentation.metrics is not None:
        bridged = _bridge_all(meter_provider, readers, resource, instrumentation.metrics)
    return Telemetry(
        instrumentation,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        owned=owned,
        metric_readers=readers,
        span_exporters=span_exporters,
        bridged=bridged,
    )


# -- environment ------------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _resource(service_name: str | None) -> Resource:
    if service_name:
        return Resource.create({SERVICE_NAME: service_name})
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


_EXPORTERS = {
    "OTEL_METRICS_EXPORTER": ("otlp", "prometheus", "console", "none"),
    "OTEL_TRACES_EXPORTER": ("otlp", "console", "none"),
}


def _exporter_names(variable: str) -> list[str]:
    value = os.environ.get(variable, "otlp")
    chosen = [name.strip().lower() for name in value.split(",") if name.strip()]
    for name in chosen:
        if name not in _EXPORTERS[variable]:
            supported = ", ".join(_EXPORTERS[variable])
            raise ConfigurationError(f"{variable}: {name!r} is not supported (use {supported})")
    return [name for name in chosen if name != "none"]


def _protocol(signal: str, override: str | None) -> str:
    variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    if override is not None:
        protocol, source = override, "protocol"
    elif variable in os.environ:
        protocol, source = os.environ[variable], variable
    else:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        source = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = protocol.strip().lower()
    if protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"{source}: {protocol!r} is not supported (use http/protobuf or grpc)"
        )
    return protocol


def _signal_url(endpoint: str | None, signal: str) -> str | None:
    # OTLP/HTTP exporters take the full signal URL; the base endpoint gets the spec's path.
    return None if endpoint is None else f"{endpoint.rstrip('/')}/v1/{signal}"


def _plan(signal: str, protocol: str | None) -> list[str]:
    """The exporters to build for ``signal``: ``console``, ``prometheus``, ``grpc`` or
    ``http/protobuf``.

    Validates everything before anything is built (a reader starts a thread when built)."""
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    return [
        name if name in ("console", "prometheus") else _protocol(signal, protocol)
        for name in _exporter_names(variable)
    ]


def _span_exporters(plan: list[str], endpoint: str | None) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for kind in plan:
        if kind == "console":
            exporters.append(ConsoleSpanExporter())
        elif kind == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            exporters.append(GrpcSpanExporter(endpoint=endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            exporters.append(HttpSpanExporter(endpoint=_signal_url(endpoint, "traces")))
    return exporters


def _metric_readers(plan: list[str], endpoint: str | None) -> list[MetricReader]:
    readers: list[MetricReader] = []
    for kind in plan:
        exporter: MetricExporter
        if kind == "prometheus":
            readers.append(_prometheus_reader())
            continue
        if kind == "console":
            exporter = ConsoleMetricExporter()
        elif kind == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )

            exporter = GrpcMetricExporter(endpoint=endpoint)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            exporter = HttpMetricExporter(endpoint=_signal_url(endpoint, "metrics"))
        readers.append(PeriodicExportingMetricReader(exporter))
    return readers


def _prometheus_reader() -> MetricReader:
    # Imported here: opentelemetry-exporter-prometheus (and prometheus_client) load only when
    # a Prometheus reader is asked for.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    # A private registry: the process-global one would collect every reader ever built in
    # this process (tests start many services) and refuse a second collector's names.
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    _registries[reader] = registry
    return reader


#: Prometheus reader -> the registry it was built with (the reader keeps it private).
_registries: weakref.WeakKeyDictionary[MetricReader, Any] = weakref.WeakKeyDictionary()


def prometheus_registry(telemetry: Telemetry) -> Any:
    """The ``prometheus_client.CollectorRegistry`` of ``telemetry``'s Prometheus reader, or
    None when it has none.  Render it with ``prometheus_client.exposition.choose_encoder``;
    each rendering collects from the SDK (the observable callbacks' snapshot reads)."""
    for reader in telemetry.metric_readers:
        if reader in _registries:
            return _registries[reader]
    return None


# -- global providers -------------------------------------------------------------------------

#: Providers this module installed globally: not a host's, even though they are global now.
_installed: weakref.WeakSet[Any] = weakref.WeakSet()


def _install(set_provider: Callable[[Any], None], provider: Any) -> None:
    set_provider(provider)
    _installed.add(provider)


def _host_meter_provider() -> metrics_api.MeterProvider | None:
    provider = metrics_api.get_meter_provider()
    if isinstance(provider, _ProxyMeterProvider | metrics_api.NoOpMeterProvider):
        return None
    return None if provider in _installed else provider


def _host_tracer_provider() -> trace_api.TracerProvider | None:
    provider = trace_api.get_tracer_provider()
    if isinstance(provider, trace_api.ProxyTracerProvider | trace_api.NoOpTracerProvider):
        return None
    return None if provider in _installed else provider


# -- the duration histogram bridge (see the module docstring) ---------------------------------


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One series of a histogram aggregated outside the SDK, cumulative since ``start_ns``."""

    attributes: Mapping[str, Any]
    start_ns: int  # epoch nanoseconds
    count: int
    sum: float
    bucket_counts: Sequence[int]  # over the histogram's bounds, plus overflow
    min: float | None = None  # optional in OTLP
    max: float | None = None


class _Histogram(NamedTuple):
    """A histogram :func:`attach_histogram` adds to each collection."""

    name: str
    unit: str
    description: str
    bounds: tuple[float, ...]
    points: Callable[[], Sequence[HistogramPoint]]

    def metric(self) -> Metric | None:
        points = self.points()
        return _histogram_metric(self.name, self.unit, self.description, self.bounds, points)


class _Bridge:
    """Stands in for a reader's collect callback: the SDK's metrics plus breakerd's."""

    def __init__(self, sdk_collect: Callable[..., MetricsData | None], resource: Resource) -> None:
        self.sdk_collect = sdk_collect
        self.resource = resource
        self.sources: list[BreakerMetrics] = []
        self.histograms: list[_Histogram] = []

    def __call__(self, reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        data = self.sdk_collect(reader, timeout_millis=timeout_millis)
        metric = duration_metric([p for s in list(self.sources) for p in s.duration_points()])
        built = [metric, *(histogram.metric() for histogram in list(self.histograms))]
        metrics = [m for m in built if m is not None]
        return _merge(data, metrics, self.resource) if metrics else data


_bridges: weakref.WeakKeyDictionary[MetricReader, _Bridge] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def attach_duration_histogram(
    reader: MetricReader, source: BreakerMetrics, resource: Resource
) -> None:
    """Make every collection of ``reader`` include ``source``'s duration histogram.

    ``reader`` must already be registered with a ``MeterProvider``; ``resource`` is used only
    for collections where the SDK itself had nothing to report.
    """
    with _bridges_lock:
        _bridge(reader, resource).sources.append(source)


def attach_histogram(
    meter_provider: metrics_api.MeterProvider,
    name: str,
    *,
    unit: str,
    description: str,
    bounds: Sequence[float],
    points: Callable[[], Sequence[HistogramPoint]],
) -> list[MetricReader]:
    """Make every collection of ``meter_provider``'s readers include the cumulative histogram
    ``name`` over ``bounds`` (``breakerd`` scope): one data point per item of ``points()``,
    called on the collecting thread.

    The breakers' duration bridge, for other histograms aggregated outside the SDK.  Only an
    SDK ``MeterProvider``'s readers (the ones it has now) can be reached; with another provider
    nothing is attached and a warning is logged.  Returns the readers attached to.
    """
    readers: list[MetricReader] = []
    resource = Resource.get_empty()
    if isinstance(meter_provider, MeterProvider):
        readers, resource = _provider_readers(meter_provider, resource)
    if not readers:
        logger.warning("no OpenTelemetry SDK metric reader to export %s through", name)
    histogram = _Histogram(name, unit, description, tuple(bounds), points)
    with _bridges_lock:
        for reader in readers:
            _bridge(reader, resource).histograms.append(histogram)
    return readers


def _bridge(reader: MetricReader, resource: Resource) -> _Bridge:
    """``reader``'s bridge, installed on first use.  Call with ``_bridges_lock`` held."""
    bridge = _bridges.get(reader)
    if bridge is None:
        sdk_collect = cast(Callable[..., MetricsData | None] | None, reader._collect)
        if sdk_collect is None:
            raise ValueError(f"{reader!r} is not registered with a MeterProvider yet")
        bridge = _bridges[reader] = _Bridge(sdk_collect, resource)
        reader._set_collect_callback(cast(Any, bridge))
    return bridge


def _provider_readers(
    meter_provider: MeterProvider, resource: Resource
) -> tuple[list[MetricReader], Resource]:
    # Only reachable through internals (readers it adds later with add_metric_reader() are
    # not bridged); ``resource`` if the provider has none.
    readers = list(getattr(meter_provider, "_metric_readers", ()))
    resource = getattr(getattr(meter_provider, "_sdk_config", None), "resource", resource)
    return readers, resource


def detach_duration_histogram(reader: MetricReader, source: BreakerMetrics) -> None:
    with _bridges_lock:
        bridge = _bridges.get(reader)
        if bridge is not None and source in bridge.sources:
            bridge.sources.remove(source)


def _bridge_all(
    meter_provider: metrics_api.MeterProvider | None,
    readers: list[MetricReader],
    resource: Resource,
    source: BreakerMetrics,
) -> list[MetricReader]:
    if not readers and isinstance(meter_provider, MeterProvider):
        # A host's SDK provider.
        readers, resource = _provider_readers(meter_provider, resource)
    if not readers:
        logger.warning(
            "the meter provider is not an OpenTelemetry SDK MeterProvider: %s is not exported",
            names.CALL_DURATION,
        )
    for reader in readers:
        attach_duration_histogram(reader, source, resource)
    return readers


def duration_metric(points: Sequence[Any]) -> Metric | None:
    """The ``circuit_breaker.call.duration`` metric for ``points`` (DurationPoint), or None."""
    # No min and max: the buckets cannot tell the exact extremes.
    histogram_points = [
        HistogramPoint({names.NAME: p.name}, p.start_ns, p.calls, p.seconds, p.bucket_counts)
        for p in points
    ]
    return _histogram_metric(
        names.CALL_DURATION,
        names.CALL_DURATION_UNIT,
        names.CALL_DURATION_DESCRIPTION,
        EXPORT_BOUNDS,
        histogram_points,
    )


def _histogram_metric(
    name: str,
    unit: str,
    description: str,
    bounds: Sequence[float],
    points: Sequence[HistogramPoint],
) -> Metric | None:
    if not points:
        return None
    now = time.time_ns()
    data_points = [
        HistogramDataPoint(
            attributes=point.attributes,
            start_time_unix_nano=point.start_ns,
            time_unix_nano=now,
            count=point.count,
            sum=point.sum,
            bucket_counts=point.bucket_counts,
            explicit_bounds=bounds,
            # Optional in OTLP (None: not exported).
            min=cast(float, point.min),
            max=cast(float, point.max),
        )
        for point in points
    ]
    return Metric(
        name=name,
        description=description,
        unit=unit,
        data=Histogram(
            data_points=data_points, aggregation_temporality=AggregationTemporality.CUMULATIVE
        ),
    )


def _merge(data: MetricsData | None, metrics: list[Metric], resource: Resource) -> MetricsData:
    if data is None or not data.resource_metrics:
        scope = ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")
            ]
        )
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scope_metrics in enumerate(scopes):
        if scope_metrics.scope.name == names.SCOPE:
            scopes[index] = ScopeMetrics(
                scope=scope_metrics.scope,
                metrics=[*scope_metrics.metrics, *metrics],
                schema_url=scope_metrics.schema_url,
            )
            break
    else:
        scopes.append(ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url=""))
    merged = ResourceMetrics(
        resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
    )
    return MetricsData(resource_metrics=[merged, *rest])
