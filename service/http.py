"""The HTTP surface: routes, the admin-token check, and the one place errors become responses.

Routes (all JSON bodies encoded with msgspec)::

    GET  /livez                       liveness: 200 while HTTP is served and the actors run
    GET  /readyz                      readiness: 200 when every route can be served now, else 503
    GET  /health                      health summary; 503 per [health] fail_on (service.probes)
    GET  /metrics                     Prometheus text / OpenMetrics (service.prometheus)
    GET  /breakers                    every breaker's metrics snapshot
    GET  /breakers/{name}             one breaker's snapshot (404 for an unknown name)
    POST /breakers/{name}/reset       admin: back to CLOSED, counts cleared
    POST /breakers/{name}/open        admin: force OPEN until reset/close
    POST /breakers/{name}/close       admin: force CLOSED until reset/open
    POST /breakers/reset              admin: reset every breaker
    GET  /events                      Server-Sent Events: state changes, periodic metrics
    GET  /dashboard                   the live dashboard page (``/`` redirects; service.dashboard)
    POST /v1/chat/completions         the OpenAI-compatible gateway (``service.gateway``)
    GET  /v1/models[/{id}]            the gateway's routes, as models
    POST /v1/embeddings               embeddings through the route's OpenAI-wire providers
    POST /v1/messages[/count_tokens]  the Anthropic-compatible gateway

Errors: handlers raise; the outermost middleware turns *every* exception into a JSON body of
the OpenAI shape ``{"error": {"message", "type", "code", "param"}}`` through
:func:`problem_for`, the single mapping from exceptions to statuses.  Unexpected exceptions
are logged with their traceback and answered with a bare 500: nothing internal reaches a
client.

Admin endpoints need ``Authorization: Bearer <token>`` equal to the token the service was
started with (``BREAKERD_ADMIN_TOKEN``), compared with :func:`hmac.compare_digest`.  Without a
configured token they answer 403 and say how to enable them; a missing or wrong token gets 401.
Read-only endpoints need no token.

Every handler runs on the service's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from actors.extras import missing_extra

try:
    from aiohttp import web
except ImportError as exc:  # the core install: no HTTP service
    raise missing_extra("aiohttp", "service", "breakerd's HTTP service") from exc

from actors.breaker import Breaker
from actors.bus import EventBus
from actors.errors import CircuitBreakerOpenError
from actors.events import Event, StateChanged
from actors.system import default_system
from service.circuit_breaker import get_event_bus
from service.config import ServiceConfig
from service.dashboard import add_routes as add_dashboard_routes
from service.jsonlimits import JSONTooDeepError, check_depth
from service.llm.cooldown import cooldowns
from service.llm_client import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NetworkTimeoutError,
    ProviderConfigurationError,
    ProviderSaturatedError,
    RateLimitError,
)
from service.monitor import get_circuit_breaker_monitor
from service.probes import Readiness, alive, health_status, no_routes

logger = logging.getLogger("service.http")

ADMIN_TOKEN_ENV = "BREAKERD_ADMIN_TOKEN"

#: ``Retry-After`` for a breaker forced open: nothing will reopen it by itself, so the client
#: gets a long-ish pause rather than the infinity the breaker reports.
FORCED_OPEN_RETRY_AFTER = 60

#: Events a slow ``/events`` client may fall behind by before it is disconnected.
EVENTS_BUFFER = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthSource = Callable[[], Awaitable[Mapping[str, Any]]]
ReadinessSource = Callable[[], Awaitable[Readiness]]


# -- errors: the one mapping -------------------------------------------------------------------


class Problem(Exception):
    """An error answer: HTTP ``status``, an OpenAI-style ``type``, a message for the client,
    and extra ``headers`` (``Retry-After``, ``WWW-Authenticate``, ``Allow``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.type}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> web.Response:
        return json_response(self.body(), status=self.status, headers=self.headers)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds (at least 1; forced-open infinity becomes a minute)."""
    if math.isinf(seconds) or math.isnan(seconds):
        return str(FORCED_OPEN_RETRY_AFTER)
    return str(max(1, math.ceil(seconds)))


def problem_for(exc: BaseException) -> Problem:
    """The answer for ``exc``; unknown exceptions become a generic 500 (log them yourself)."""
    if isinstance(exc, Problem):
        return exc
    # An open breaker first: the LLM client's CircuitOpenAPIError is also an APIError.
    if isinstance(exc, CircuitBreakerOpenError):
        # x-should-retry: false makes the OpenAI and Anthropic SDKs fail fast instead of
        # sleeping through their retries; Retry-After says when a probe will be admitted.
        return Problem(
            503,
            str(exc),
            type="service_unavailable",
            code="circuit_open",
            headers={
                "Retry-After": retry_after_header(exc.retry_after),
                "x-should-retry": "false",
            },
        )
    if isinstance(exc, APIError):
        return _upstream_problem(exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return Problem(
            413, "request body too large (see service.max_body_bytes)", code="body_too_large"
        )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return Problem(
            405,
            f"method {exc.method} is not allowed here; allowed: {allowed}",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPNotFound):
        return Problem(404, "no such endpoint; see the API table in the README", type="not_found")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return Problem(exc.status, exc.reason or "request failed", type="invalid_request_error")
    return Problem(500, "internal error; see the service log", type="server_error")


def _upstream_problem(exc: APIError) -> Problem:
    """A provider's failure, seen from the gateway's client.

    The client's own mistakes (invalid request, rate limit) keep their 4xx; the upstream's
    failures are the gateway's 502/504; a bad key or a missing setting is the operator's, so
    the client gets a 502 without details beyond the provider's name (the log has them).
    """
    upstream = f"upstream {exc.provider!r}"
    if isinstance(exc, ProviderSaturatedError):  # ours, not the upstream's: retry soon
        return Problem(
            503,
            f"{upstream} is saturated here: {exc.message}",
            type="service_unavailable",
            code="provider_saturated",
            headers={"Retry-After": "1", "x-should-retry": "true"},
        )
    if isinstance(exc, RateLimitError):
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = retry_after_header(exc.retry_after)
        return Problem(
            429,
            f"{upstream} is rate limiting: {exc.message}",
            type="rate_limit_error",
            code="rate_limited",
            headers=headers,
        )
    if isinstance(exc, InvalidRequestError):
        if exc.status is None:  # refused by the client before anything was sent
            return Problem(400, f"invalid request: {exc.message}")
        return Problem(400, f"{upstream} refused the request: {exc.message}")
    if isinstance(exc, NetworkTimeoutError):
        return Problem(
            504,
            f"{upstream} did not answer: {exc.message}",
            type="server_error",
            code="upstream_timeout",
        )
    if isinstance(exc, AuthenticationError | ProviderConfigurationError):
        logger.error("%s cannot be called as configured: %s", upstream, exc)
        return Problem(
            502,
            f"{upstream} is not configured correctly; see the service log",
            type="server_error",
            code="upstream_misconfigured",
        )
    status = f" (HTTP {exc.status})" if exc.status is not None else ""
    return Problem(
        502, f"{upstream} failed{status}: {exc.message}", type="server_error", code="upstream_error"
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return problem_for(exc).response()
    except Exception as exc:
        problem = problem_for(exc)
        if problem.status == 500:  # only an exception nobody expected maps to a bare 500
            logger.exception("%s %s failed", request.method, request.path)
        elif problem.status >= 500:
            logger.warning("%s %s: %s", request.method, request.path, problem.message)
        return problem.response()


#: The event stream a request is answering, if any: a cut at shutdown (``service.server``)
#: ends it with an SSE ``error`` event, since its status line is already sent.
EVENT_STREAM = web.RequestKey("event_stream", web.StreamResponse)


async def start_event_stream(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response``'s head (an SSE stream), remembering it on ``request`` (see
    :data:`EVENT_STREAM`)."""
    request[EVENT_STREAM] = response
    await response.prepare(request)


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )


async def read_json(request: web.Request, type: type[Any]) -> Any:
    """Decode the request body as ``type``; raises :class:`Problem` (400) naming what was
    wrong (nesting deeper than ``service.max_json_depth`` included), or 413 through aiohttp's
    body limit."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[_BODY_LIMIT]
        raise Problem(
            413,
            f"request body too large: the limit is {limit} bytes (service.max_body_bytes)",
            code="body_too_large",
        ) from None
    if not body:
        raise Problem(400, "request body is empty; expected a JSON object")
    # msgspec recurses per level and has no depth option: refuse deep nesting before it does.
    max_depth = request.app[_CONFIG].service.max_json_depth
    try:
        check_depth(body, max_depth)
        return msgspec.json.decode(body, type=type)
    except (JSONTooDeepError, RecursionError):
        raise Problem(
            400,
            f"request body nests JSON deeper than {max_depth} levels (service.max_json_depth)",
            code="json_too_deep",
        ) from None
    except msgspec.ValidationError as exc:
        raise Problem(400, f"invalid request: {_validation_message(exc, type)}") from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"request body is not valid JSON: {exc}") from None


def _validation_message(exc: msgspec.ValidationError, type: Any) -> str:
    """msgspec's message with ``$.a.b`` paths shown as ``a.b``; an unknown top-level field
    also lists the accepted ones."""
    text = str(exc)
    fields = getattr(type, "__struct_fields__", None)
    if fields and text.startswith("Object contains unknown field") and " - at " not in text:
        text += f"; accepted fields: {', '.join(fields)}"
    return text.replace("`$.", "`").replace("`$`", "the body")


# -- admin token -------------------------------------------------------------------------------


class AdminAuth:
    """Checks the admin bearer token; ``token`` None or empty disables the admin endpoints."""

    __slots__ = ("_token",)

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def __repr__(self) -> str:  # never the token itself
        return f"<AdminAuth {'enabled' if self._token else 'disabled'}>"

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, request: web.Request) -> None:
        """Return if the request carries the token; raise :class:`Problem` 403/401 if not."""
        if self._token is None:
            raise Problem(
                403,
                f"admin endpoints are disabled: start the service with {ADMIN_TOKEN_ENV} set "
                "and send 'Authorization: Bearer <token>'",
                type="permission_error",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        supplied = given.strip().encode("utf-8", "backslashreplace")
        # compare_digest on every request shape, so timing never tells how close a guess was.
        matches = hmac.compare_digest(supplied, self._token)
        if scheme.lower() != "bearer" or not matches:
            raise Problem(
                401,
                f"missing or wrong admin token: send 'Authorization: Bearer <{ADMIN_TOKEN_ENV}>'",
                type="authentication_error",
                headers={"WWW-Authenticate": 'Bearer realm="breakerd"'},
            )


_AUTH = web.AppKey("auth", AdminAuth)
_BODY_LIMIT = web.AppKey("body_limit", int)


def _admin_only(handler: Handler) -> Handler:
    """``handler`` behind the admin token (a wrapper on the admin routes alone, rather than a
    middleware every request would pass through)."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        request.app[_AUTH].check(request)
        return await handler(request)

    return checked


# -- breakers and health -----------------------------------------------------------------------


def _breaker(request: web.Request) -> Breaker:
    name = request.match_info["name"]
    breaker = default_system().breakers().get(name)
    if breaker is None:
        raise Problem(404, f"no circuit breaker named {name!r}", type="not_found")
    return breaker


async def _snapshots() -> dict[str, Any]:
    breakers = default_system().breakers()
    return {name: await _snapshot(breakers[name]) for name in sorted(breakers)}


async def _snapshot(breaker: Breaker) -> Any:
    """A breaker's metrics, with its provider's rate-limit cooldown beside them when it has
    one (``cooldown_remaining``, ``rate_limited``, ``cooldown_skipped``: service.llm.cooldown)."""
    metrics = await breaker.metrics_async()
    cooldown = cooldowns(default_system()).get(breaker.name)
    return metrics if cooldown is None else metrics.to_dict() | cooldown.snapshot()


async def _get_breakers(request: web.Request) -> web.Response:
    return json_response({"breakers": await _snapshots()})


async def _get_breaker(request: web.Request) -> web.Response:
    return json_response(await _snapshot(_breaker(request)))


async def _manage(request: web.Request) -> web.Response:
    breaker = _breaker(request)
    action = request.match_info["action"]
    if action == "reset":
        await breaker.reset_async()
    elif action == "open":
        await breaker.force_open_async()
    else:
        await breaker.force_close_async()
    logger.info("admin: %s breaker %r", action, breaker.name)
    return json_response(await breaker.metrics_async())


async def _reset_all(request: web.Request) -> web.Response:
    breakers = default_system().breakers()
    for breaker in breakers.values():
        await breaker.reset_async()
    logger.info("admin: reset all %d breakers", len(breakers))
    return json_response({"reset": sorted(breakers)})


async def _monitor_health() -> Mapping[str, Any]:
    return await get_circuit_breaker_monitor().get_health_summary_async()


_HEALTH: web.AppKey[HealthSource] = web.AppKey("health")
_READINESS: web.AppKey[ReadinessSource] = web.AppKey("readiness")
_CONFIG = web.AppKey("config", ServiceConfig)


async def _get_health(request: web.Request) -> web.Response:
    """The detailed report; 503 only as ``[health] fail_on`` says (or when the service itself
    is broken: then the monitor raises and the error middleware answers 500)."""
    summary = dict(await request.app[_HEALTH]())
    ready = await request.app[_READINESS]()
    summary["readiness"] = ready
    status = health_status(request.app[_CONFIG].health.fail_on, summary, ready)
    return json_response(summary, status=status)


async def _get_livez(request: web.Request) -> web.Response:
    if not alive():
        return json_response({"live": False, "reason": "actor system closed"}, status=503)
    return json_response({"live": True})


async def _get_readyz(request: web.Request) -> web.Response:
    ready = await request.app[_READINESS]()
    return json_response(ready, status=200 if ready.ready else 503)


# -- /events -----------------------------------------------------------------------------------


class EventStreams:
    """The open ``/events`` responses, so that shutdown can end them (loop thread only)."""

    def __init__(self, bus: EventBus, interval: float) -> None:
        self.bus = bus
        self.interval = interval
        self.closing = False
        self._queues: set[asyncio.Queue[Event | None]] = set()

    def close_all(self) -> None:
        """End every stream after what it has queued (called when shutdown begins)."""
        self.closing = True
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await start_event_stream(request, response)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=EVENTS_BUFFER)
        lagged = False

        def offer(event: Event) -> None:
            nonlocal lagged
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                lagged = True

        async def deliver(event: Event) -> None:
            # Runs on the bus's loop, which is normally this one; hop over if it is not.
            if asyncio.get_running_loop() is loop:
                offer(event)
            else:
                loop.call_soon_threadsafe(offer, event)

        subscription = self.bus.subscribe(deliver, events=(StateChanged,))
        self._queues.add(queue)
        sequence = 0
        try:
            await response.write(b": breakerd events; state_changed as they happen\n\n")
            await response.write(_sse("metrics", {"breakers": await _snapshots()}))
            while not self.closing:
                try:
                    async with asyncio.timeout(self.interval):
                        event = await queue.get()
                except TimeoutError:
                    await response.write(_sse("metrics", {"breakers": await _snapshots()}))
                    continue
                if event is None:
                    break
                if lagged:
                    await response.write(_sse("error", {"message": "client too slow; reconnect"}))
                    break
                sequence += 1
                await response.write(_sse("state_changed", event, sequence))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            subscription.close()
            self._queues.discard(queue)
        return response


def _sse(kind: str, data: Any, ident: int | None = None) -> bytes:
    head = f"event: {kind}\n" if ident is None else f"id: {ident}\nevent: {kind}\n"
    return head.encode() + b"data: " + msgspec.json.encode(data) + b"\n\n"


_STREAMS = web.AppKey("streams", EventStreams)


async def _get_events(request: web.Request) -> web.StreamResponse:
    return await request.app[_STREAMS].serve(request)


async def _on_shutdown(app: web.Application) -> None:
    app[_STREAMS].close_all()


# -- the application ---------------------------------------------------------------------------


def create_app(
    config: ServiceConfig,
    *,
    admin_token: str | None,
    chat_completions: Handler | None = None,
    health: HealthSource = _monitor_health,
    readiness: ReadinessSource = no_routes,
    bus: EventBus | None = None,
    metrics: Handler | None = None,
    outer: Sequence[Any] = (),
    inner: Sequence[Any] = (),
) -> web.Application:
    """Build the service's aiohttp application.

    ``admin_token``: the bearer token for the admin endpoints (None or empty: disabled).
    ``chat_completions``: the gateway's handler (None: the route answers 404 like any unknown
    path).  ``health`` and ``bus`` default to the process-wide monitor and event bus;
    ``readiness`` (``service.probes.RouteProbe.check``) to "no routes, ready".
    ``metrics``: the ``GET /metrics`` handler (``service.prometheus``; None: no route).
    ``outer``: middlewares around the error mapping (they see every answer's final status:
    the access log); ``inner``: middlewares inside it (their errors become JSON: gateway keys).
    """
    app = web.Application(
        client_max_size=config.service.max_body_bytes,
        middlewares=[*outer, _errors, *inner],
    )
    app[_AUTH] = AdminAuth(admin_token)
    app[_BODY_LIMIT] = config.service.max_body_bytes
    app[_HEALTH] = health
    app[_READINESS] = readiness
    app[_CONFIG] = config
    app[_STREAMS] = EventStreams(bus or get_event_bus(), config.service.events_interval)
    router = app.router
    router.add_get("/livez", _get_livez)
    router.add_get("/readyz", _get_readyz)
    router.add_get("/health", _get_health)
    if metrics is not None:
        router.add_get("/metrics", metrics)
    router.add_get("/breakers", _get_breakers)
    router.add_get("/events", _get_events)
    router.add_post("/breakers/reset", _admin_only(_reset_all))
    router.add_post(r"/breakers/{name}/{action:reset|open|close}", _admin_only(_manage))
    router.add_get("/breakers/{name}", _get_breaker)
    if chat_completions is not None:
        router.add_post("/v1/chat/completions", chat_completions)
    add_dashboard_routes(app, admin_enabled=app[_AUTH].enabled)
    app.on_shutdown.append(_on_shutdown)
    return app
