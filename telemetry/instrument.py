"""Wiring: one telemetry actor per actor system, fed by its bus, talking to the OpenTelemetry API.

:func:`instrument` is what a library or a host application calls with providers it already
has (or with none, to use the global ones).  It never imports the SDK; ``telemetry.setup``
builds SDK providers and exporters and then calls this.

The telemetry actor is an ordinary actor on the system's runtime, subscribed to
``StateChanged`` and ``CallsRecorded``: per event it folds counts into tallies and, for the rare
state changes, starts, annotates or ends a span.  Breakers never wait for it (the bus only
appends to its mailbox, dropping ``CallsRecorded`` beyond the buffer and counting the drop).
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api

from actors.bus import Subscription
from actors.errors import ActorSystemClosedError
from actors.events import BreakerRemoved, CallsRecorded, Event, StateChanged
from actors.runtime import Actor, Runtime
from actors.system import ActorSystem, default_system
from telemetry import names
from telemetry.metrics import BreakerMetrics
from telemetry.tracing import (
    CallSpans,
    OutageSpans,
    enable_call_spans,
    listen_for_rejections,
    stop_listening_for_rejections,
)

try:
    VERSION = version("breakerd")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    VERSION = "0.0.0"


#: Outcome events the telemetry actor may have waiting before the bus drops (and counts) more.
#: One loop turn can drain every breaker before the telemetry actor's turn comes, so this is
#: sized for some 10,000 busy breakers (an event is about 1 KB) rather than the bus default.
MAILBOX_LIMIT = 16_384


class Settle(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Answered once every event delivered before it has been applied."""


class EndOutages(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """End every running outage span at ``at`` (epoch seconds)."""

    at: float


class TelemetryActor(Actor):
    """Applies bus events to metrics and spans; every handler runs on the runtime's loop."""

    __slots__ = ("metrics", "spans")

    def __init__(
        self, runtime: Runtime, metrics: BreakerMetrics | None, spans: OutageSpans | None
    ) -> None:
        super().__init__(runtime)
        self.metrics = metrics
        self.spans = spans

    def __repr__(self) -> str:
        return f"<TelemetryActor metrics={self.metrics!r} spans={self.spans!r}>"

    def _receive(self, message: Any) -> Any:
        if isinstance(message, Event):
            if self.metrics is not None:
                self.metrics.handle(message)
            if self.spans is not None:
                self.spans.handle(message)
        elif isinstance(message, EndOutages):
            if self.spans is not None:
                self.spans.close(message.at)
        elif not isinstance(message, Settle):
            raise TypeError(f"telemetry actor cannot handle {type(message).__name__}")
        return None


class Instrumentation:
    """Telemetry attached to one actor system.  Close it to detach.

    ``metrics`` is None when metrics are off, ``call_spans`` None when per-call spans are off.
    """

    def __init__(
        self,
        system: ActorSystem,
        actor: TelemetryActor,
        subscription: Subscription,
        call_spans: CallSpans | None,
    ) -> None:
        self.system = system
        self.actor = actor
        self.subscription: Subscription | None = subscription
        self.call_spans = call_spans

    def __repr__(self) -> str:
        state = "closed" if self.subscription is None else "active"
        return f"<Instrumentation {self.system.name!r} {state} {self.actor!r}>"

    @property
    def metrics(self) -> BreakerMetrics | None:
        return self.actor.metrics

    def settle(self) -> None:
        """Block until every event published so far has been applied (any thread).

        Events a breaker has not published yet (outcomes still in its mailbox) are not
        covered: ask the breaker first (e.g. ``breaker.metrics``) to drain it.
        """
        self.actor.ask(Settle())

    async def settle_async(self) -> None:
        await self.actor.ask_async(Settle())

    def detach(self) -> None:
        """Stop listening and end running outage spans, after applying every event already
        delivered.  The metric callbacks keep reporting the final figures (so that a last
        export still has them) until :meth:`close`.  Idempotent; any thread, also after the
        actor system has closed."""
        if self._unsubscribe():
            message = EndOutages(at=time.time())
            try:
                self.actor.ask(message)
            except ActorSystemClosedError:
                self._end_outages_here(message)

    async def detach_async(self) -> None:
        """:meth:`detach` for async callers: the final ask is awaited, not blocked on."""
        if self._unsubscribe():
            message = EndOutages(at=time.time())
            try:
                await self.actor.ask_async(message)
            except ActorSystemClosedError:
                self._end_outages_here(message)

    def close(self) -> None:
        """:meth:`detach`, and make the metric callbacks report nothing from now on."""
        self.detach()
        self._stop_metrics()

    async def close_async(self) -> None:
        await self.detach_async()
        self._stop_metrics()

    def _unsubscribe(self) -> bool:
        subscription, self.subscription = self.subscription, None
        if subscription is None:
            return False
        subscription.close()
        if self.actor.spans is not None:
            stop_listening_for_rejections()
        if self.call_spans is not None:
            enable_call_spans(None)
        return True

    def _end_outages_here(self, message: EndOutages) -> None:
        # The runtime is closed (or never started): it runs no handlers, so this thread is the
        # only one that can touch the actor's state now.
        self.actor._receive(message)

    def _stop_metrics(self) -> None:
        if self.actor.metrics is not None:
            self.actor.metrics.closed = True


def instrument(
    system: ActorSystem | None = None,
    *,
    meter_provider: metrics_api.MeterProvider | None = None,
    tracer_provider: trace_api.TracerProvider | None = None,
    metrics: bool = True,
    traces: bool = True,
    call_span_ratio: float = 0.0,
) -> Instrumentation:
    """Attach telemetry to ``system`` (default: the process-wide one).

    ``meter_provider`` / ``tracer_provider`` default to the global providers.  ``metrics`` and
    ``traces`` switch each signal; with traces on, rejected calls add an event to the caller's
    recording span, and ``call_span_ratio`` > 0 turns on sampled per-call spans for functions
    wrapped with :func:`telemetry.traced`.  Call from any thread.

    ``circuit_breaker.call.duration`` is not an API instrument (see ``telemetry.setup``): with
    providers of your own, hand your SDK metric readers to
    ``telemetry.setup.attach_duration_histogram`` to export it too.
    """
    system = system if system is not None else default_system()
    breaker_metrics: BreakerMetrics | None = None
    spans: OutageSpans | None = None
    call_spans: CallSpans | None = None
    if metrics:
        provider = meter_provider or metrics_api.get_meter_provider()
        breaker_metrics = BreakerMetrics(provider.get_meter(names.SCOPE, VERSION), system)
    if traces:
        tracer = (tracer_provider or trace_api.get_tracer_provider()).get_tracer(
            names.SCOPE, VERSION
        )
        spans = OutageSpans(tracer)
        if call_span_ratio:
            call_spans = CallSpans(tracer, call_span_ratio)
    actor = TelemetryActor(system.runtime, breaker_metrics, spans)
    subscription = system.bus.subscribe(
        actor, events=(StateChanged, CallsRecorded, BreakerRemoved), buffer=MAILBOX_LIMIT
    )
    if spans is not None:
        listen_for_rejections()
    if call_spans is not None:
        enable_call_spans(call_spans)
    return Instrumentation(system, actor, subscription, call_spans)
