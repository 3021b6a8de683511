"""A fake LLM upstream for rehearsing outages: OpenAI- and Anthropic-compatible, with faults.

``python -m service.simulator [--host H] [--port P] [--latency S]`` runs it on its own; the
service starts one in-process when no provider key is set, and the tests and the demo use the
:class:`Simulator` class directly.

Wire formats (enough of each for the LLM client and the usual SDKs):

- OpenAI Chat Completions: ``POST /v1/chat/completions`` (base URL ``<url>/v1``), JSON or SSE
  (``stream: true``: ``chat.completion.chunk`` events, then ``data: [DONE]``).
- Anthropic Messages: ``POST /v1/messages`` (base URL ``<url>``), JSON or SSE
  (``message_start`` ... ``content_block_delta`` ... ``message_stop``).

The reply repeats the last user message, so a person can tell which request it answers.  Any
API key is accepted.

Faults, per wire format (``api``: ``openai``, ``anthropic`` or ``all``), set with
``POST /_control`` (or :meth:`Simulator.control`), read with ``GET /_control``::

    {"api": "openai", "outage": true, "duration": 20}     # every call fails for 20 s
    {"error_rate": 0.3, "status": 529}                     # 30 % of calls fail with 529
    {"status": 429, "error_rate": 1, "retry_after": 7}     # rate limited, Retry-After: 7
    {"latency": 2.5}                                       # 2.5 s more per response
    {"truncate_streams": true}                             # streams stop halfway
    {"reset": true}                                        # back to no faults

A change with ``duration`` holds for that many seconds and then the previous settings return
by themselves (checked at each request: no timer to cancel).  Errors use each provider's error
JSON.  Nothing here is meant to be reachable from other hosts: it binds 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import signal
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

logger = logging.getLogger("service.simulator")

Api = Literal["openai", "anthropic"]
APIS: tuple[Api, ...] = ("openai", "anthropic")


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """What one wire format does to each request."""

    outage: bool = False
    error_rate: float = 0.0
    status: int = 503
    latency: float = 0.0
    retry_after: float | None = None
    truncate_streams: bool = False


_UNSET: Any = msgspec.UNSET


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /_control``; unset fields keep their current value."""

    api: Literal["openai", "anthropic", "all"] = "all"
    outage: bool | msgspec.UnsetType = _UNSET
    error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] | msgspec.UnsetType = _UNSET
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] | msgspec.UnsetType = _UNSET
    latency: Annotated[float, msgspec.Meta(ge=0, le=600)] | msgspec.UnsetType = _UNSET
    retry_after: Annotated[float, msgspec.Meta(ge=0)] | msgspec.UnsetType | None = _UNSET
    truncate_streams: bool | msgspec.UnsetType = _UNSET
    duration: Annotated[float, msgspec.Meta(gt=0)] | None = None
    reset: bool = False

    def changes(self) -> dict[str, Any]:
        fields = ("outage", "error_rate", "status", "latency", "retry_after", "truncate_streams")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not _UNSET}


class ApiState:
    """The faults of one wire format, and what it has served (loop thread only)."""

    __slots__ = ("base", "failed", "in_flight", "requests", "temporary", "until")

    def __init__(self) -> None:
        self.base = Faults()
        self.temporary: Faults | None = None
        self.until = 0.0
        self.requests = 0
        self.failed = 0
        self.in_flight = 0

    def faults(self, now: float) -> Faults:
        if self.temporary is not None and now >= self.until:
            self.temporary = None  # the timed change is over: back to the base settings
        return self.temporary if self.temporary is not None else self.base

    def apply(self, request: ControlRequest, now: float) -> None:
        if request.reset:
            self.base, self.temporary = Faults(), None
        current = self.faults(now)
        changed = msgspec.structs.replace(current, **request.changes())
        if request.duration is None:
            self.base, self.temporary = changed, None
        else:
            self.temporary, self.until = changed, now + request.duration

    def describe(self, now: float) -> dict[str, Any]:
        faults = self.faults(now)
        return {
            **msgspec.structs.asdict(faults),
            "temporary_for": round(self.until - now, 3) if self.temporary is not None else None,
            "requests": self.requests,
            "failed": self.failed,
            "in_flight": self.in_flight,
        }


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str | list[dict[str, Any]]


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatRequest(msgspec.Struct, frozen=True):
    """The fields the simulator reads from either wire format (others are ignored)."""

    messages: list[ChatMessage]
    model: str = "simulated-model"
    stream: bool = False
    stream_options: StreamOptions | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


_ids = itertools.count(1)


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
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/_control", self._post_control)
        app.router.add_get("/_control", self._get_control)
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
        """Change the faults (a :class:`ControlRequest`, or its fields as keywords); returns
        the state as ``GET /_control`` shows it.  Raises ``msgspec.ValidationError`` for bad
        fields."""
        if request is None:
            request = msgspec.convert(fields, ControlRequest)
        now = self._clock()
        targets = APIS if request.api == "all" else (request.api,)
        for api in targets:
            self.apis[api].apply(request, now)
        logger.info("simulator faults changed: %s", msgspec.json.encode(request).decode())
        return self.describe()

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        return {api: state.describe(now) for api, state in self.apis.items()}

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read(), type=ControlRequest)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            return _json({"error": f"invalid control request: {exc}"}, status=400)
        return _json(self.control(body))

    async def _get_control(self, request: web.Request) -> web.Response:
        return _json(self.describe())

    # -- the two wire formats ------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "anthropic")

    async def _serve(self, request: web.Request, api: Api) -> web.StreamResponse:
        state = self.apis[api]
        state.requests += 1
        state.in_flight += 1
        try:
            faults = state.faults(self._clock())
            delay = self.latency + faults.latency
            if delay:
                await asyncio.sleep(delay)
            if faults.outage or (faults.error_rate and self._random.random() < faults.error_rate):
                state.failed += 1
                return _error(api, faults)
            try:
                body = msgspec.json.decode(await request.read(), type=ChatRequest)
            except msgspec.DecodeError as exc:
                return _error(api, Faults(status=400), f"invalid request body: {exc}")
            text = _reply_text(api, body)
            if body.stream:
                return await _stream(request, api, body, text, faults.truncate_streams)
            return _json(_completion(api, body.model, text))
        finally:
            state.in_flight -= 1


def _reply_text(api: Api, body: ChatRequest) -> str:
    said = ""
    for message in reversed(body.messages):
        if message.role == "user":
            said = message.content if isinstance(message.content, str) else "(parts)"
            break
    return f"Simulated {api} reply to: {said[:200]}"


def _usage(text: str) -> tuple[int, int]:
    return 8, len(text.split())


def _completion(api: Api, model: str, text: str) -> dict[str, Any]:
    prompt, completion = _usage(text)
    if api == "openai":
        return {
            "id": f"chatcmpl-sim{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    return {
        "id": f"msg_sim{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


def _deltas(text: str) -> list[str]:
    words = text.split(" ")
    return [word if index == 0 else " " + word for index, word in enumerate(words)]


def _openai_events(model: str, text: str, include_usage: bool) -> list[bytes]:
    ident, created = f"chatcmpl-sim{next(_ids)}", int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "finish_reason": finish}]

    events = [chunk(choice({"role": "assistant", "content": ""}))]
    events += [chunk(choice({"content": delta})) for delta in _deltas(text)]
    events.append(chunk(choice({}, "stop")))
    if include_usage:  # as OpenAI does: one more chunk, with no choices
        prompt, completion = _usage(text)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        events.append(chunk([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return events


def _anthropic_events(model: str, text: str) -> list[bytes]:
    prompt, completion = _usage(text)

    def event(kind: str, body: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + msgspec.json.encode(body) + b"\n\n"

    start: dict[str, Any] = {
        "id": f"msg_sim{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": prompt, "output_tokens": 0},
    }
    events = [
        event("message_start", {"type": "message_start", "message": start}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    events += [
        event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}},
        )
        for d in _deltas(text)
    ]
    events += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": completion},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return events


async def _stream(
    request: web.Request, api: Api, body: ChatRequest, text: str, truncate: bool
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if api == "openai":
        events = _openai_events(body.model, text, body.include_usage)
    else:
        events = _anthropic_events(body.model, text)
    if truncate:  # the connection ends cleanly, halfway, before the end marker
        events = events[: len(events) // 2]
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error(api: Api, faults: Faults, message: str | None = None) -> web.Response:
    status = faults.status
    message = message or f"simulated upstream error (HTTP {status})"
    headers = {}
    if faults.retry_after is not None:
        headers["Retry-After"] = f"{faults.retry_after:g}"
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
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
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


# -- command line ------------------------------------------------------------------------------


async def _main(args: argparse.Namespace) -> None:
    simulator = Simulator(host=args.host, port=args.port, latency=args.latency, seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with simulator:
        logger.info(
            "upstream simulator listening: OpenAI base URL %s, Anthropic base URL %s; "
            'faults: curl -X POST %s/_control -d \'{"outage": true, "duration": 20}\'',
            simulator.openai_base_url,
            simulator.anthropic_base_url,
            simulator.url,
        )
        await stop.wait()
    logger.info("upstream simulator stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.simulator",
        description="A fake OpenAI/Anthropic upstream with fault injection (POST /_control).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081; 0 = any)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per response")
    parser.add_argument("--seed", type=int, default=None, help="seed for error_rate draws")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
