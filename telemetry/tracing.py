"""Breaker spans: one span per outage, an event on the caller's span per rejection, and
opt-in sampled spans per call.  API only.

Outage spans (:class:`OutageSpans`)
    ``circuit_breaker.open`` runs from the ``StateChanged`` that opens a breaker until the one
    that closes it, with the events' own timestamps, as a root span (an outage belongs to no
    single request; the actor's context may carry whichever caller woke it, so the span is
    started in an empty context on purpose).  While it runs it collects span events: every
    state change (``circuit_breaker.state_change``: into half-open, back to open, closed) and
    the probes' outcomes (``circuit_breaker.probe.completed``).  Probe outcomes come from two
    places: a ``CallsRecorded`` of a drain that ended in HALF_OPEN carries its successful
    probes; the state change out of HALF_OPEN is itself the outcome of the probe that caused it
    (``probe_failed``: a failure, ``probes_succeeded``: the success that completed the count).

Rejection events (:func:`add_rejection_event`)
    Registered in ``actors.breaker.rejection_listeners``; runs on the rejected caller's thread
    and costs one context lookup and one ``is_recording()`` when no span records.

Per-call spans (:func:`traced`, :class:`CallSpans`)
    Off by default.  A guarded function wrapped with :func:`traced` gets a
    ``circuit_breaker.call`` span for a ``ratio`` of its calls, once telemetry is set up with
    ``call_span_ratio > 0``; the sampling decision is one ``random()`` so that unsampled calls
    never reach the SDK.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from opentelemetry.context import Context
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    use_span,
)

from actors import breaker as breaker_module
from actors.breaker import Breaker
from actors.config import CircuitState
from actors.errors import CallTimeoutError, CircuitBreakerOpenError, ConfigurationError
from actors.events import CallsRecorded, Event, StateChanged
from telemetry import names

F = TypeVar("F", bound=Callable[..., Any])

_EMPTY_CONTEXT = Context()


def _ns(epoch_seconds: float) -> int:
    return int(epoch_seconds * 1e9)


class _Outage:
    __slots__ = ("half_open_attempts", "probe_failures", "probe_successes", "rejected", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.half_open_attempts = 0
        self.probe_successes = 0
        self.probe_failures = 0
        self.rejected = 0


class OutageSpans:
    """Turns bus events into ``circuit_breaker.open`` spans (telemetry actor thread only)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._outages: dict[str, _Outage] = {}

    def __repr__(self) -> str:
        return f"<OutageSpans open={sorted(self._outages)}>"

    def handle(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self._state_changed(event)
        elif isinstance(event, CallsRecorded):
            outage = self._outages.get(event.breaker)
            if outage is not None:
                outage.rejected += event.rejected
                if event.state is CircuitState.HALF_OPEN and event.successes:
                    self._probes(outage, "success", event.successes, event.at)

    def _state_changed(self, event: StateChanged) -> None:
        outage = self._outages.get(event.breaker)
        if outage is None:
            if event.to_state is CircuitState.OPEN:
                self._outages[event.breaker] = self._open(event)
            return  # a change outside any outage we saw begin
        if event.from_state is CircuitState.HALF_OPEN:
            if event.reason == "probe_failed":
                self._probes(outage, "failure", 1, event.at)
            elif event.reason == "probes_succeeded":
                self._probes(outage, "success", 1, event.at)
        if event.to_state is CircuitState.HALF_OPEN:
            outage.half_open_attempts += 1
        outage.span.add_event(
            names.STATE_CHANGE_EVENT,
            {
                names.TRANSITION_FROM: event.from_state.value,
                names.TRANSITION_TO: event.to_state.value,
                names.TRANSITION_REASON: event.reason,
            },
            timestamp=_ns(event.at),
        )
        if event.to_state is CircuitState.CLOSED:
            del self._outages[event.breaker]
            self._end(outage, event.reason, event.at)

    def _open(self, event: StateChanged) -> _Outage:
        span = self._tracer.start_span(
            names.OPEN_SPAN,
            context=_EMPTY_CONTEXT,
            kind=SpanKind.INTERNAL,
            attributes={
                names.NAME: event.breaker,
                names.TRANSITION_FROM: event.from_state.value,
                names.TRANSITION_REASON: event.reason,
                names.FORCED: event.forced,
                names.CONSECUTIVE_FAILURES: event.consecutive_failures,
                names.FAILED_CALLS: event.failed_calls,
                names.TOTAL_CALLS: event.total_calls,
            },
            start_time=_ns(event.at),
        )
        return _Outage(span)

    def _probes(self, outage: _Outage, outcome: str, count: int, at: float) -> None:
        if outcome == "success":
            outage.probe_successes += count
        else:
            outage.probe_failures += count
        outage.span.add_event(
            names.PROBE_EVENT,
            {names.OUTCOME: outcome, names.PROBE_COUNT: count},
            timestamp=_ns(at),
        )

    def _end(self, outage: _Outage, reason: str, at: float) -> None:
        span = outage.span
        span.set_attributes(
            {
                names.CLOSE_REASON: reason,
                names.REJECTED_CALLS: outage.rejected,
                names.HALF_OPEN_ATTEMPTS: outage.half_open_attempts,
                names.PROBE_SUCCESSES: outage.probe_successes,
                names.PROBE_FAILURES: outage.probe_failures,
            }
        )
        span.end(end_time=_ns(at))

    def close(self, at: float) -> None:
        """End every outage still running (telemetry is shutting down), with close reason
        ``telemetry_shutdown``, so that they are exported rather than lost."""
        outages, self._outages = self._outages, {}
        for outage in outages.values():
            self._end(outage, "telemetry_shutdown", at)


# -- rejection events -------------------------------------------------------------------------


def add_rejection_event(error: CircuitBreakerOpenError) -> None:
    """Add ``circuit_breaker.call.rejected`` to the caller's current span if it records."""
    span = get_current_span()
    if span.is_recording():
        state = error.state
        attributes: dict[str, Any] = {
            names.NAME: error.breaker_name,
            names.STATE: state.value if isinstance(state, CircuitState) else str(state),
        }
        if math.isfinite(error.retry_after):
            attributes[names.RETRY_AFTER] = error.retry_after
        else:
            attributes[names.FORCED] = True
        span.add_event(names.REJECTED_EVENT, attributes)


_listener_lock = threading.Lock()
_listener_users = 0


def listen_for_rejections() -> None:
    """Register :func:`add_rejection_event` (counted: once however many telemetries use it)."""
    global _listener_users
    with _listener_lock:
        _listener_users += 1
        if _listener_users == 1:
            breaker_module.rejection_listeners.append(add_rejection_event)


def stop_listening_for_rejections() -> None:
    global _listener_users
    with _listener_lock:
        _listener_users -= 1
        if _listener_users == 0:
            breaker_module.rejection_listeners.remove(add_rejection_event)


# -- per-call spans ---------------------------------------------------------------------------


class CallSpans:
    """Sampled ``circuit_breaker.call`` spans around guarded calls.

    ``ratio`` in [0, 1] is the share of calls that get a span; ``sample`` returns a float in
    [0, 1) per call (injectable for tests).
    """

    def __init__(
        self, tracer: Tracer, ratio: float, *, sample: Callable[[], float] = random.random
    ) -> None:
        self._tracer = tracer
        self.ratio = check_call_span_ratio(ratio)
        self._sample = sample

    def __repr__(self) -> str:
        return f"<CallSpans ratio={self.ratio}>"

    def sampled(self) -> bool:
        return self._sample() < self.ratio

    def _start(self, breaker: Breaker) -> Span:
        return self._tracer.start_span(
            names.CALL_SPAN, kind=SpanKind.INTERNAL, attributes={names.NAME: breaker.name}
        )

    @staticmethod
    def _finish(span: Span, breaker: Breaker, exc: BaseException | None, result: Any) -> None:
        """Label the span with the outcome the breaker recorded (judged the same way)."""
        config = breaker.config
        if exc is None:
            predicate = config.failure_predicate
            outcome = "failure" if predicate is not None and predicate(result) else "success"
        elif isinstance(exc, CircuitBreakerOpenError) and exc.breaker_name == breaker.name:
            outcome = "rejected"
        elif isinstance(exc, CallTimeoutError) or (
            isinstance(exc, Exception) and config.counts_as_failure(exc)
        ):
            outcome = "failure"
        else:
            outcome = "ignored"
        span.set_attribute(names.OUTCOME, outcome)
        if outcome in ("failure", "rejected"):
            error_type = type(exc).__qualname__ if exc is not None else "failure_predicate"
            span.set_attribute(names.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def call(self, breaker: Breaker, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``breaker.call(fn, ...)`` inside a span (always: sampling is :func:`traced`'s job)."""
        span = self._start(breaker)
        with use_span(span, record_exception=False, set_status_on_exception=False):
            try:
                result = breaker.call(fn, *args, **kwargs)
            except BaseException as exc:
                self._finish(span, breaker, exc, None)
                raise
        self._finish(span, breaker, None, result)
        return result

    async def call_async(
        self, breaker: Breaker, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        span = self._start(breaker)
        with use_span(span, record_exception=False, set_status_on_exception=False):
            try:
                result = await breaker.call_async(fn, *args, **kwargs)
            except BaseException as exc:
                self._finish(span, breaker, exc, None)
                raise
        self._finish(span, breaker, None, result)
        return result


def check_call_span_ratio(value: Any) -> float:
    """``value`` as a float if it is a number in [0, 1]; raises ConfigurationError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigurationError(f"call_span_ratio: expected a number in [0, 1], got {value!r}")
    return float(value)


#: The per-call span source in effect (set by telemetry setup when the ratio is above 0).
_call_spans: CallSpans | None = None


def enable_call_spans(call_spans: CallSpans | None) -> None:
    """Make :func:`traced` functions use ``call_spans`` (None: no per-call spans)."""
    global _call_spans
    _call_spans = call_spans


def traced(guarded: F) -> F:
    """Give a guarded function (from ``circuit_breaker(...)``, ``guard`` or a breaker used as a
    decorator) sampled per-call spans once telemetry enables them; until then, and for
    unsampled calls, it costs one global read and one comparison.

    Raises ``TypeError`` if ``guarded`` has no ``circuit_breaker`` attribute.
    """
    breaker = getattr(guarded, "circuit_breaker", None)
    if not isinstance(breaker, Breaker):
        raise TypeError(f"traced() needs a function guarded by a circuit breaker, got {guarded!r}")
    inner = cast(Any, guarded).__wrapped__  # the undecorated function, run by the breaker
    wrapper: Any
    if inspect.iscoroutinefunction(guarded):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            spans = _call_spans
            if spans is None or not spans.sampled():
                return await guarded(*args, **kwargs)
            return await spans.call_async(breaker, inner, *args, **kwargs)

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            spans = _call_spans
            if spans is None or not spans.sampled():
                return guarded(*args, **kwargs)
            return spans.call(breaker, inner, *args, **kwargs)

    functools.update_wrapper(wrapper, guarded)
    wrapper.circuit_breaker = breaker
    return cast(F, wrapper)
