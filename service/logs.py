"""The service's log: setup (level, text or JSON lines), the access log, and breaker transitions.

Three kinds of lines, all through the standard :mod:`logging` module:

- everything the service logs anyway (``service.*``, ``actors.*``, ``telemetry``);
- the access log (logger ``service.access``): one line per ``/v1/*`` request, written by
  :func:`access_middleware` once the answer is known, with the route, the provider that
  served it, status, duration, whether a fallback served it, the breaker outcome and the
  client key's short hash.  Probe scrapes (``/livez``, ``/readyz``, ``/health``, ``/metrics``)
  only with ``[logging] probe_access_log``;
- transitions (logger ``service.breakers``), from a bus subscriber
  (:class:`TransitionLogger`): an opening is a WARNING with the reason, the failure counts and
  when the next probe is due; a close is INFO.

``--log-format json`` writes one JSON object per line with the stable keys ``time``,
``level``, ``logger``, ``message``, plus the line's own fields (``event`` names the kind:
``access``, ``breaker_opened`` ...) so that a log shipper needs no parsing rules.  The text
format appends the same fields as ``key=value``.

Secrets: no line carries a header, a body or a key.  The client key appears only as
:func:`service.gateway_auth.key_id` (a short hash); exception texts from providers go through
the LLM client's redaction before they are logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
from aiohttp import web

from actors.breaker import Breaker
from actors.bus import EventBus, Subscription
from actors.config import CircuitState
from actors.events import Event, StateChanged
from actors.system import default_system

LogFormat = Literal["text", "json"]
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: Final = ("text", "json")

#: ``extra`` key under which a line's structured fields travel on a ``LogRecord``.
FIELDS: Final = "breakerd_fields"

access_logger = logging.getLogger("service.access")
transition_logger = logging.getLogger("service.breakers")

PROBE_PATHS: Final = frozenset({"/livez", "/readyz", "/health", "/metrics"})


# -- setup -------------------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, FIELDS, None)
    return fields if isinstance(fields, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    the record's fields, and ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``: for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        head, newline, rest = text.partition("\n")  # keep a traceback below the fields
        return f"{head} {pairs}{newline}{rest}"


#: What makes a text value need quotes: white space or a quote (one C-level scan per value).
_NEEDS_QUOTES = re.compile(r'[\s"]')


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return json.dumps(text) if not text or _NEEDS_QUOTES.search(text) else text


def configure_logging(level: str = "INFO", format: LogFormat = "text") -> None:
    """Send every log line to stderr at ``level`` and above, in ``format``.  Replaces the
    root logger's handlers (the service owns the process's logging)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access logger stays quiet: ours replaces it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Neither format shows the caller's file and line, the thread or the process, so the
    # records need not look them up: the logging HOWTO's "Optimization" switches.  They take
    # about a fifth off an access-log line (a walk up the stack and three lookups per record).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


# -- the access log ----------------------------------------------------------------------------


class RequestInfo:
    """What the gateway learned about one request, for the access log and the metrics.

    The middleware puts one on every ``/v1/*`` request (:data:`REQUEST_INFO`); handlers fill
    ``route``, ``provider``, ``fallback`` and ``breaker_outcome`` when they know them, and
    the gateway-keys check fills ``client``.  What is left None is derived from the answer
    (the ``X-Breakerd-Provider`` header, the status).
    """

    __slots__ = ("breaker_outcome", "client", "fallback", "provider", "route")

    def __init__(self) -> None:
        self.route: str | None = None
        self.provider: str | None = None
        self.fallback: bool | None = None
        self.breaker_outcome: str | None = None
        self.client: str | None = None


REQUEST_INFO: Final = web.RequestKey("breakerd_request_info", RequestInfo)

#: ``(route, provider, status, seconds)`` of each gateway request: the metrics' hook.
RequestObserver = Callable[[str, str, int, float], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PrimaryOf = Callable[[str], str | None]


def breaker_outcome(status: int, code: str | None) -> str:
    """What the serving breaker made of the request, from the answer: ``success``,
    ``rejected`` (open breakers, nothing was called), ``failure`` (the upstream failed) or
    ``not_counted`` (the client's own mistake, a rate limit, a local error)."""
    if status < 400:
        return "success"
    if code == "circuit_open":
        return "rejected"
    if status in (502, 504):
        return "failure"
    return "not_counted"


def access_middleware(
    *,
    enabled: bool = True,
    probes: bool = False,
    primary_of: PrimaryOf | None = None,
    observe: RequestObserver | None = None,
) -> Any:
    """The aiohttp middleware writing the access log and feeding ``observe`` (metrics).

    Place it outermost, so that it sees the status the error middleware chose.  ``primary_of``
    gives a route's own provider, to tell when a fallback served.  Costs one
    ``perf_counter`` pair and one log record per gateway request; nothing for other paths.
    """

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        gateway = path.startswith("/v1/")
        if not gateway and not (probes and path in PROBE_PATHS):
            return await handler(request)
        info = RequestInfo()
        request[REQUEST_INFO] = info
        start = time.perf_counter()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            seconds = time.perf_counter() - start
            _finish(info, response, status, primary_of)
            if gateway and observe is not None:
                observe(_route_label(info.route, primary_of), info.provider or "", status, seconds)
            if enabled:
                _log_access(request, info, status, seconds)

    return access


def _route_label(route: str | None, primary_of: PrimaryOf | None) -> str:
    """The metrics label of a route: ``(none)`` for requests without one (unknown models are
    the client's text, never a label of their own: cardinality stays the config's)."""
    if route is None or (primary_of is not None and primary_of(route) is None):
        return "(none)"
    return route


def _finish(
    info: RequestInfo,
    response: web.StreamResponse | None,
    status: int,
    primary_of: PrimaryOf | None,
) -> None:
    """Fill what the handler left unset from the answer."""
    if info.provider is None and response is not None:
        info.provider = response.headers.get("X-Breakerd-Provider") or None
    if info.fallback is None and info.route is not None and info.provider is not None:
        primary = primary_of(info.route) if primary_of is not None else None
        info.fallback = primary is not None and info.provider != primary
    if info.breaker_outcome is None:
        info.breaker_outcome = breaker_outcome(status, _error_code(response))


class _ErrorDetail(msgspec.Struct):
    code: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | None = None


def _error_code(response: web.StreamResponse | None) -> str | None:
    """The ``error.code`` of a JSON error answer (``circuit_open`` ...)."""
    if not isinstance(response, web.Response) or response.status < 400:
        return None
    body = response.body
    if not isinstance(body, bytes) or response.content_type != "application/json":
        return None
    try:
        error = msgspec.json.decode(body, type=_ErrorBody).error
    except msgspec.DecodeError:
        return None
    return None if error is None else error.code


def _log_access(request: web.Request, info: RequestInfo, status: int, seconds: float) -> None:
    fields = {
        "event": "access",
        "method": request.method,
        "path": request.path,
        "route": info.route,
        "provider": info.provider,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "fallback": info.fallback,
        "breaker_outcome": info.breaker_outcome,
        "client": info.client,
    }
    access_logger.info(
        "%s %s %d %.1fms", request.method, request.path, status, seconds * 1000,
        extra={FIELDS: fields},
    )  # fmt: skip


# -- transitions -------------------------------------------------------------------------------


class TransitionLogger:
    """Logs every breaker state change from the bus: WARNING when a breaker opens (reason,
    failure counts, when the next probe is due), INFO when it closes or half-opens.

    Runs as a bus subscriber on the actor system's loop: it cannot slow a breaker (the bus
    buffers for it), and a failure to log stays here.  ``close()`` unsubscribes.
    """

    def __init__(self, bus: EventBus, breakers: Callable[[], Mapping[str, Breaker]]) -> None:
        self._breakers = breakers
        self._subscription: Subscription = bus.subscribe(self.handle, events=(StateChanged,))

    def __repr__(self) -> str:
        return f"<TransitionLogger {self._subscription!r}>"

    def close(self) -> None:
        self._subscription.close()

    async def handle(self, event: Event) -> None:
        assert isinstance(event, StateChanged)
        fields: dict[str, Any] = {
            "event": f"breaker_{event.to_state.value}",
            "breaker": event.breaker,
            "from_state": event.from_state.value,
            "to_state": event.to_state.value,
            "reason": event.reason,
            "consecutive_failures": event.consecutive_failures,
            "failed_calls": event.failed_calls,
            "total_calls": event.total_calls,
        }
        if event.to_state is not CircuitState.OPEN:
            level = logging.INFO if event.to_state is CircuitState.CLOSED else logging.DEBUG
            transition_logger.log(
                level,
                "breaker %r %s (%s)",
                event.breaker,
                "closed" if event.to_state is CircuitState.CLOSED else "half-open",
                event.reason,
                extra={FIELDS: fields},
            )
            return
        retry = await self._retry_after(event)
        fields["retry_in_s"] = retry
        transition_logger.warning(
            "breaker %r opened (%s): %d consecutive failures, %d of %d calls failed; %s",
            event.breaker,
            event.reason,
            event.consecutive_failures,
            event.failed_calls,
            event.total_calls,
            "forced open until reset" if retry is None else f"next probe in {retry:.1f}s",
            extra={FIELDS: fields},
        )

    async def _retry_after(self, event: StateChanged) -> float | None:
        """Seconds to the next probe, from the breaker itself (backoff included); None when
        forced open."""
        if event.forced:
            return None
        breaker = self._breakers().get(event.breaker)
        if breaker is None:
            return None
        snapshot = await breaker.metrics_async()
        if snapshot.state is not CircuitState.OPEN or snapshot.retry_after is None:
            return breaker.config.timeout_duration  # already moved on: the configured break
        return round(snapshot.retry_after, 3)


def log_transitions(bus: EventBus | None = None) -> TransitionLogger:
    """Start logging the process-wide system's transitions (or ``bus``'s)."""
    system = default_system()
    return TransitionLogger(bus or system.bus, system.breakers)
