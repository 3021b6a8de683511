"""The HTTP server at its edges: connections, request heads and bodies, and the cut at shutdown.

aiohttp bounds the size of a request line and of each header, but not time: a client that
sends one header byte every few seconds keeps its connection, and a file descriptor, for as
long as aiohttp's keep-alive allows (an hour by default).  A few thousand such clients exhaust
the descriptors, and then nobody can connect, the health probe included.  This module adds
what is missing around aiohttp, in three pieces:

- :class:`GuardedHandler`, aiohttp's per-connection ``RequestHandler`` subclassed: it counts
  open connections and refuses those beyond ``max_connections`` with a 503 written straight to
  the socket; it closes a connection whose request head is not complete ``header_timeout``
  seconds after it began (408; a connection that sent nothing is closed without an answer,
  which a client's connection pool would mistake for the answer to its next request); and it
  answers aiohttp's own parse errors (bad method, oversized URL or header) with the service's
  JSON error, logged at INFO, where aiohttp would answer text/plain and log an ERROR with a
  traceback for each.
- :func:`edges`, the innermost middleware: the body limit of the route (``/v1/*`` carries
  images, everything else is small), a deadline for receiving the body (408), and the registry
  of in-flight requests, which shutdown cuts with a clean 503 JSON error (or, for a stream
  already under way, an SSE ``error`` event) instead of letting them fail on closed sessions.
- :class:`GuardedRunner`, an ``AppRunner`` that puts both in place, plus a loop exception
  handler that logs failed ``accept()`` calls (out of descriptors) once per interval with a
  count, instead of a traceback each time.

Which task runs what: everything here runs on the service's event loop; the protocol methods
are called by asyncio's transport, the middleware in each request's handler task.

Alternatives considered: a reverse proxy in front (nginx has all of this, but breakerd is meant
to run alone on a laptop or in a pod); wrapping aiohttp's protocol in a second asyncio
``Protocol`` (it would still have to read the handler's private state to know whether a request
is under way, and doubles every call); ``asyncio.wait_for`` around each handler for the cut
(it cannot tell our cut from the handler's own timeouts); ``asyncio.timeout(None)`` per
request, rescheduled by the cut (what this did first: 2.3 us a request for the object and its
context manager, against 0.3 us for the task set and the cancellation it does itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import math
import re
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from service.config import ServiceSection
from service.http import EVENT_STREAM, Problem

logger = logging.getLogger("service.server")

#: Seconds between two log lines about the same kind of refused client (with a count).
LOG_INTERVAL = 10.0

#: Seconds a refused connection stays open after its 503, so that the client reads the answer
#: before the close (closing with its request unread would reset the connection and lose it).
REFUSED_LINGER = 1.0

#: Seconds the unread rest of a refused body (413, 408) is read and dropped before the close:
#: long enough for the client to see the answer, short where aiohttp's default is 10 s.
LINGERING_TIME = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Throttled:
    """A log line that is written at most once per ``interval`` seconds; the lines held back
    in between are counted and the count is added to the next line written."""

    def __init__(
        self,
        level: int,
        message: str,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.level = level
        self.message = message
        self.interval = interval
        self.held = 0
        self._clock = clock
        self._next = -math.inf

    def __call__(self, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self.held += 1
            return
        message = self.message
        if self.held:
            message += f" ({self.held} more like it in the last {self.interval:g}s)"
        logger.log(self.level, message, *args)
        self.held = 0
        self._next = now + self.interval


def raw_response(problem: Problem) -> bytes:
    """``problem`` as a complete HTTP/1.1 response that closes the connection, for writing
    straight to a transport when there is no request to answer through aiohttp."""
    body = msgspec.json.encode(problem.body())
    phrase = http.HTTPStatus(problem.status).phrase
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **problem.headers,
    }
    head = f"HTTP/1.1 {problem.status} {phrase}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


def sse_error(problem: Problem) -> bytes:
    """An SSE ``error`` event both SDKs raise on: the OpenAI SDK on a ``data`` object with an
    ``error`` key, the Anthropic SDK on the ``error`` event name."""
    data = {"type": "error", **problem.body()}
    return b"event: error\ndata: " + msgspec.json.encode(data) + b"\n\n"


class Edge:
    """The limits of one server and what they have done: its open connections, its in-flight
    requests, and counts of everything refused (:meth:`statistics`).  Loop thread only."""

    def __init__(self, section: ServiceSection) -> None:
        self.section = section
        self.open_connections = 0
        #: The tasks of requests under way, and those of them shutdown has cut.
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.cut: set[asyncio.Task[Any]] = set()
        self.counts = {
            "refused_connections": 0,
            "header_timeouts": 0,
            "body_timeouts": 0,
            "bodies_too_large": 0,
            "malformed_requests": 0,
            "cut_at_shutdown": 0,
            "accept_errors": 0,
        }
        self.log_refused = Throttled(
            logging.WARNING,
            "refused a connection: %d are open (service.max_connections)",
        )
        self.log_header_timeout = Throttled(
            logging.INFO, "closed a connection whose request head took over %gs (from %s)"
        )
        self.log_malformed = Throttled(logging.INFO, "refused a malformed request from %s: %s")
        self.log_accept = Throttled(logging.ERROR, "cannot accept connections: %s")

    def __repr__(self) -> str:
        return (
            f"<Edge connections={self.open_connections}/{self.section.max_connections} "
            f"in_flight={len(self.in_flight)} refused={self.counts['refused_connections']}>"
        )

    def statistics(self) -> dict[str, int]:
        """Live counts: open connections, in-flight requests, and each kind of refusal."""
        return {
            "open_connections": self.open_connections,
            "in_flight": len(self.in_flight),
            **self.counts,
        }

    def body_limit(self, path: str) -> tuple[int, str]:
        """The body limit for ``path`` and the setting it comes from."""
        if path.startswith("/v1/"):
            return self.section.max_body_bytes, "service.max_body_bytes"
        return self.section.max_admin_body_bytes, "service.max_admin_body_bytes"

    def cut_in_flight(self) -> int:
        """End every in-flight request now: each answers 503, or ends its stream with an SSE
        error event (see :func:`edges`).  Returns how many were cut."""
        for task in self.in_flight:
            self.cut.add(task)
            task.cancel()
        return len(self.in_flight)

    def accept_error_handler(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """A loop exception handler that throttles asyncio's ``accept()`` failures and passes
        everything else on to ``previous`` (or the loop's default handler)."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            error = context.get("exception")
            if str(context.get("message", "")).startswith("socket.accept()") and isinstance(
                error, OSError
            ):
                self.counts["accept_errors"] += 1
                self.log_accept(error.strerror or error)
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handle


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a connection cap, a request-head deadline, and JSON
    answers to malformed requests (see the module docstring)."""

    __slots__ = ("_edge", "_head_began", "_head_timer", "_refused")

    def __init__(self, manager: web.Server, *, edge: Edge, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = edge
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_began = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._edge
        if edge.open_connections >= edge.section.max_connections:
            # Refused before aiohttp sees it: no handler task, no parser, one short write.
            self._refused = True
            edge.counts["refused_connections"] += 1
            edge.log_refused(edge.open_connections)
            assert isinstance(transport, asyncio.Transport)
            transport.write(
                raw_response(
                    Problem(
                        503,
                        "too many open connections; retry shortly",
                        type="service_unavailable",
                        code="too_many_connections",
                        headers={"Retry-After": "1"},
                    )
                )
            )
            if transport.can_write_eof():
                transport.write_eof()
            self._loop.call_later(REFUSED_LINGER, transport.close)
            return
        edge.open_connections += 1
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._edge.open_connections -= 1
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # whatever a refused client still sends is dropped
        # Idle between requests (waiting for the next one) and bytes arrive: a head begins.
        idle = self._head_timer is None and self._waiter is not None and not self._close
        self._head_began = True
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a whole head arrived (or a parse error)
            self._disarm_head_timer()
        elif idle and self._head_timer is None and not self._close:
            # The head is not whole yet: its deadline starts now.  (Most heads arrive in one
            # piece, and then no timer is armed at all: one less per request.)
            self._arm_head_timer()
            self._head_began = True

    def _arm_head_timer(self) -> None:
        self._head_began = False
        self._head_timer = self._loop.call_later(
            self._edge.section.header_timeout, self._head_timed_out
        )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close or self._close:
            return
        edge = self._edge
        edge.counts["header_timeouts"] += 1
        timeout = edge.section.header_timeout
        edge.log_header_timeout(timeout, self.peername)
        if not self._head_began:
            # Not a byte since the connection opened: close without an answer, which a
            # client's connection pool would take as the answer to its next request.
            self.force_close()
            return
        # No request is under way (the timer only runs between requests), so nothing else
        # writes to this transport.
        self.transport.write(
            raw_response(
                Problem(
                    408,
                    f"the request head did not arrive within {timeout:g}s (service.header_timeout)",
                    code="header_timeout",
                )
            )
        )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (4xx) or whose handler failed
        outside every middleware (5xx), as the service's JSON error."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            problem = Problem(status, "internal error; see the service log", type="server_error")
        else:
            self._edge.counts["malformed_requests"] += 1
            reason = _reason(message or str(exc or http.HTTPStatus(status).phrase))
            self._edge.log_malformed(request.remote, reason)
            problem = Problem(status, f"malformed request: {reason}", code="malformed_request")
        if request.writer.output_size > 0:  # as aiohttp does: too late for another answer
            raise ConnectionError("response already started; cannot send the error")
        response = problem.response()
        response.force_close()
        return response


_QUOTED_INPUT = re.compile(r":?\s*(?:b'|b\"|bytearray\().*", re.DOTALL)


def _reason(message: str) -> str:
    """aiohttp's parse error without the bytes it quotes: they are the client's input, which
    may hold a header value (a key) and belongs neither in the log nor in the answer."""
    first_line = message.strip().split("\n", 1)[0]
    return _QUOTED_INPUT.sub("", first_line).rstrip(" :") or "unparsable request"


class GuardedServer(web.Server):
    """aiohttp's low-level server making :class:`GuardedHandler` connections."""

    def __init__(self, handler: Any, *, edge: Edge, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.edge = edge

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, edge=self.edge, **self._kwargs)


_EDGE = web.AppKey("edge", Edge)


@web.middleware
async def edges(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Body limit and deadline, then the handler, cut with a 503 (or an SSE error event) if
    shutdown says so.  The body is read here, so handlers find it read already."""
    edge = request.app[_EDGE]
    if request.body_exists:
        try:
            request = await _read_body(request, edge)
        except Problem as refused:
            # The rest of the body is not worth waiting for: answer, then close.
            response = refused.response()
            response.force_close()
            return response
    # The cut is a cancellation of this task that only this function handles (what
    # asyncio.timeout does, without a Timeout object and its context manager per request).
    task = asyncio.current_task()
    assert task is not None
    edge.in_flight.add(task)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if task not in edge.cut:
            raise  # the client left, or the server is closing the connection: not ours
        task.uncancel()
    finally:
        edge.in_flight.discard(task)
        edge.cut.discard(task)
    edge.counts["cut_at_shutdown"] += 1
    problem = Problem(
        503,
        "the service is shutting down; retry the request",
        type="service_unavailable",
        code="shutting_down",
        headers={"Retry-After": "1"},
    )
    stream: web.StreamResponse | None = request.get(EVENT_STREAM)
    if stream is None:
        # Answered here, not raised: shutdown logs one line for all of them (Edge.cut_in_flight's
        # caller), where the error middleware would log a warning per request.
        return problem.response()
    # The answer is under way: the client can only be told inside the stream.
    with contextlib.suppress(ConnectionError, RuntimeError):
        await stream.write(sse_error(problem))
        await stream.write_eof()
    return stream


async def _read_body(request: web.Request, edge: Edge) -> web.Request:
    limit, setting = edge.body_limit(request.path)

    def too_large() -> Problem:
        return Problem(
            413,
            f"request body too large: the limit is {limit} bytes ({setting})",
            code="body_too_large",
        )

    if request.content_length is None:
        # Chunked: counted as it comes, against this route's limit rather than the app's.
        request = request.clone(client_max_size=limit)
    elif request.content_length > limit:
        edge.counts["bodies_too_large"] += 1
        raise too_large()
    timeout = edge.section.body_timeout
    try:
        if request.content.is_eof():
            # The whole body came with the head (most API requests do): nothing to wait for,
            # so no deadline to arm (a timer per request is measurable on the gateway's path).
            await request.read()
        else:
            async with asyncio.timeout(timeout):
                await request.read()
    except TimeoutError:
        edge.counts["body_timeouts"] += 1
        raise Problem(
            408,
            f"the request body did not arrive within {timeout:g}s (service.body_timeout)",
            code="body_timeout",
        ) from None
    except web.HTTPRequestEntityTooLarge:
        edge.counts["bodies_too_large"] += 1
        raise too_large() from None
    return request


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` serving ``app`` with the limits of ``section`` (see the module
    docstring).  ``edge`` holds the live counts; :meth:`Edge.cut_in_flight` ends what is
    still running at shutdown.  Other keyword arguments go to ``web.AppRunner``."""

    def __init__(self, app: web.Application, section: ServiceSection, **kwargs: Any) -> None:
        super().__init__(
            app,
            keepalive_timeout=section.keepalive_timeout,
            lingering_time=LINGERING_TIME,
            **kwargs,
        )
        self.edge = Edge(section)
        app[_EDGE] = self.edge
        app.middlewares.append(edges)
        self._restore_exception_handler: Callable[[], None] | None = None

    async def setup(self) -> None:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(self.edge.accept_error_handler(previous))
        self._restore_exception_handler = lambda: loop.set_exception_handler(previous)
        _warn_if_descriptors_run_out(self.edge.section.max_connections)
        await super().setup()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            if self._restore_exception_handler is not None:
                self._restore_exception_handler()
                self._restore_exception_handler = None

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts and freezes the app
        return GuardedServer(
            plain.request_handler,
            edge=self.edge,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


#: Descriptors kept for everything but client connections: upstream connections, logs, Redis.
DESCRIPTOR_RESERVE = 256


def _warn_if_descriptors_run_out(max_connections: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + DESCRIPTOR_RESERVE > soft:
        logger.warning(
            "service.max_connections (%d) plus %d for upstreams exceeds the open-file limit "
            "(%d): raise it (ulimit -n) or lower max_connections, or accept() will fail "
            "before the cap answers 503",
            max_connections,
            DESCRIPTOR_RESERVE,
            soft,
        )
