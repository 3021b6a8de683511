"""The simulator's HTTP server: routes, fault injection, the log of received requests."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from service.llm.translate.vocab import ANTHROPIC_ERROR_TYPES
from service.simulator import anthropic_wire, openai_wire
from service.simulator.answers import answer
from service.simulator.errors import BadRequest

logger = logging.getLogger("service.simulator")

Api = Literal["openai", "anthropic"]
APIS: tuple[Api, ...] = ("openai", "anthropic")
RECEIVED_LIMIT = 100
"""How many requests ``GET /_received`` remembers (the oldest are forgotten first)."""

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})


class Behaviour(msgspec.Struct, frozen=True, kw_only=True):
    """What one wire format does to each request: its faults, and whether it echoes."""

    outage: bool = False
    error_rate: float = 0.0
    status: int = 503
    latency: float = 0.0
    retry_after: float | None = None
    truncate_streams: bool = False
    echo: bool = False


_UNSET: Any = msgspec.UNSET
_SETTINGS = Behaviour.__struct_fields__


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /_control``; unset fields keep their current value."""

    api: Literal["openai", "anthropic", "all"] = "all"
    outage: bool | msgspec.UnsetType = _UNSET
    error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] | msgspec.UnsetType = _UNSET
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] | msgspec.UnsetType = _UNSET
    latency: Annotated[float, msgspec.Meta(ge=0, le=600)] | msgspec.UnsetType = _UNSET
    retry_after: Annotated[float, msgspec.Meta(ge=0)] | msgspec.UnsetType | None = _UNSET
    truncate_streams: bool | msgspec.UnsetType = _UNSET
    echo: bool | msgspec.UnsetType = _UNSET
    duration: Annotated[float, msgspec.Meta(gt=0)] | None = None
    reset: bool = False

    def changes(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in _SETTINGS if getattr(self, name) is not _UNSET
        }


class ApiState:
    """The behaviour of one wire format, and what it has served (loop thread only)."""

    __slots__ = ("base", "failed", "in_flight", "requests", "temporary", "until")

    def __init__(self) -> None:
        self.base = Behaviour()
        self.temporary: Behaviour | None = None
        self.until = 0.0
        self.requests = 0
        self.failed = 0
        self.in_flight = 0

    def behaviour(self, now: float) -> Behaviour:
        if self.temporary is not None and now >= self.until:
            self.temporary = None  # the timed change is over: back to the base settings
        return self.temporary if self.temporary is not None else self.base

    def apply(self, request: ControlRequest, now: float) -> None:
        if request.reset:
            self.base, self.temporary = Behaviour(), None
        changed = msgspec.structs.replace(self.behaviour(now), **request.changes())
        if request.duration is None:
            self.base, self.temporary = changed, None
        else:
            self.temporary, self.until = changed, now + request.duration

    def describe(self, now: float) -> dict[str, Any]:
        return {
            **msgspec.structs.asdict(self.behaviour(now)),
            "temporary_for": round(self.until - now, 3) if self.temporary is not None else None,
            "requests": self.requests,
            "failed": self.failed,
            "in_flight": self.in_flight,
        }


class Received(msgspec.Struct, frozen=True, kw_only=True):
    """One request as it arrived (API keys redacted), for ``GET /_received``."""

    api: Api
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON, or the text when it is not JSON


Handler = Callable[[web.Request, bytes, Behaviour], Awaitable[web.StreamResponse]]


class Simulator:
    """The fake upstream as an object: ``async with Simulator() as sim:`` or start/stop.

    Every method runs on the event loop that started it.  ``latency`` is the base response
    time; ``seed`` makes ``error_rate`` reproducible.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self._clock = clock
        self._random = random.Random(seed)
        self.apis: dict[Api, ApiState] = {api: ApiState() for api in APIS}
        self.received: collections.deque[Received] = collections.deque(maxlen=RECEIVED_LIMIT)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def __repr__(self) -> str:
        where = self.url or "stopped"
        counts = " ".join(f"{api}={state.requests}" for api, state in self.apis.items())
        return f"<Simulator {where} {counts}>"

    @property
    def openai_base_url(self) -> str:
        """The base URL an OpenAI client takes (with the ``/v1`` version path)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base URL an Anthropic client takes (without a version path)."""
        return self.url

    def base_url(self, api: Api) -> str:
        return self.openai_base_url if api == "openai" else self.anthropic_base_url

    # -- lifecycle -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)  # images as data URLs
        routes: list[tuple[str, Api, Handler]] = [
            ("/v1/chat/completions", "openai", _chat),
            ("/v1/embeddings", "openai", _embeddings),
            ("/v1/messages", "anthropic", _messages),
            ("/v1/messages/count_tokens", "anthropic", _count_tokens),
        ]
        for path, api, handler in routes:
            app.router.add_post(path, self._route(api, handler))
        app.router.add_post("/_control", self._post_control)
        app.router.add_get("/_control", self._get_control)
        app.router.add_get("/_received", self._get_received)
        app.router.add_delete("/_received", self._delete_received)
        return app

    async def start(self) -> str:
        """Start listening; returns the URL (with the real port when ``port`` was 0)."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = port
        self.url = f"http://{_url_host(host)}:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening; requests still running get a second to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- control -------------------------------------------------------------------------------

    def control(self, request: ControlRequest | None = None, **fields: Any) -> dict[str, Any]:
        """Change the behaviour (a :class:`ControlRequest`, or its fields as keywords); returns
        the state as ``GET /_control`` shows it.  Raises ``msgspec.ValidationError`` for bad
        fields."""
        if request is None:
            request = msgspec.convert(fields, ControlRequest)
        now = self._clock()
        targets = APIS if request.api == "all" else (request.api,)
        for api in targets:
            self.apis[api].apply(request, now)
        logger.info("simulator behaviour changed: %s", msgspec.json.encode(request).decode())
        return self.describe()

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        return {api: state.describe(now) for api, state in self.apis.items()}

    def bodies(self, api: Api | None = None, path: str | None = None) -> list[Any]:
        """The bodies of the requests received (oldest first), optionally of one wire format
        or path: what a test asserts on to see what a gateway forwarded."""
        return [
            entry.body
            for entry in self.received
            if (api is None or entry.api == api) and (path is None or entry.path == path)
        ]

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=ControlRequest)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            return _json({"error": f"invalid control request: {exc}"}, status=400)
        return _json(self.control(body))

    async def _get_control(self, request: web.Request) -> web.Response:
        return _json(self.describe())

    async def _get_received(self, request: web.Request) -> web.Response:
        api = request.query.get("api")
        if api not in (None, *APIS):
            return _json({"error": f"api: expected one of {', '.join(APIS)}"}, status=400)
        entries = [entry for entry in self.received if api is None or entry.api == api]
        return _json({"received": entries})

    async def _delete_received(self, request: web.Request) -> web.Response:
        self.received.clear()
        return _json({"received": []})

    # -- the wire formats ----------------------------------------------------------------------

    def _route(self, api: Api, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, api, handler)

        return serve

    async def _serve(self, request: web.Request, api: Api, handler: Handler) -> web.StreamResponse:
        state = self.apis[api]
        state.requests += 1
        state.in_flight += 1
        try:
            raw = await request.read()
            self.received.append(_received(api, request, raw))
            behaviour = state.behaviour(self._clock())
            delay = self.latency + behaviour.latency
            if delay:
                await asyncio.sleep(delay)
            if behaviour.outage or (
                behaviour.error_rate and self._random.random() < behaviour.error_rate
            ):
                state.failed += 1
                return _error(api, behaviour.status, behaviour.retry_after)
            if request.headers.get("x-sim-echo") == "1":
                behaviour = msgspec.structs.replace(behaviour, echo=True)
            try:
                return await handler(request, raw, behaviour)
            except BadRequest as exc:
                return _error(api, 400, None, str(exc))
        finally:
            state.in_flight -= 1


async def _chat(request: web.Request, raw: bytes, behaviour: Behaviour) -> web.StreamResponse:
    body, ask = openai_wire.read_chat(raw, echo=behaviour.echo)
    answers = [answer("openai", ask) for _ in range(body.n)]
    if body.stream:
        events = openai_wire.events(body.model, answers, include_usage=body.include_usage)
        return await _stream(request, events, behaviour.truncate_streams)
    return _json(openai_wire.completion(body.model, answers))


async def _embeddings(request: web.Request, raw: bytes, behaviour: Behaviour) -> web.StreamResponse:
    return _json(openai_wire.embeddings(raw))


async def _messages(request: web.Request, raw: bytes, behaviour: Behaviour) -> web.StreamResponse:
    body, ask = anthropic_wire.read_messages(raw, echo=behaviour.echo)
    reply = answer("anthropic", ask, preamble=True)
    if body.stream:
        events = anthropic_wire.events(body.model, reply)
        return await _stream(request, events, behaviour.truncate_streams)
    return _json(anthropic_wire.message(body.model, reply))


async def _count_tokens(
    request: web.Request, raw: bytes, behaviour: Behaviour
) -> web.StreamResponse:
    return _json(anthropic_wire.count_tokens(raw))


async def _stream(request: web.Request, events: list[bytes], truncate: bool) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if truncate:  # the connection ends cleanly, halfway, before the end marker
        events = events[: len(events) // 2]
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


def _received(api: Api, request: web.Request, raw: bytes) -> Received:
    headers = {
        name.lower(): ("<redacted>" if name.lower() in _SECRET_HEADERS else value)
        for name, value in request.headers.items()
    }
    body: Any
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = raw.decode(errors="replace")
    return Received(api=api, method=request.method, path=request.path, headers=headers, body=body)


def _error(
    api: Api, status: int, retry_after: float | None, message: str | None = None
) -> web.Response:
    message = message or f"simulated upstream error (HTTP {status})"
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    elif status == 429:
        headers["Retry-After"] = "1"
    body: dict[str, Any]
    if api == "openai":
        kind = (
            "rate_limit_error"
            if status == 429
            else ("invalid_request_error" if status < 500 else "server_error")
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    else:
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    return _json(body, status=status, headers=headers)


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
