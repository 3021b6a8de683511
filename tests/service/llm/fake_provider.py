"""A fake LLM provider: both wire formats, SSE streaming, and fault injection per request.

It listens on 127.0.0.1 (an ephemeral port) and serves ``POST /v1/chat/completions`` (Chat
Completions: use ``openai_base_url``) and ``POST /v1/messages`` (Anthropic Messages: use
``anthropic_base_url``).  Every request is recorded and counted here, on the server side,
before any fault applies, so a test can prove that a call sent nothing.

Faults are queued with :meth:`FakeProvider.inject` and used up one per request, in order;
with the queue empty a request gets a normal answer.  Error bodies echo the request's API key
(as real providers sometimes do) so that the tests can check that the client redacts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass(frozen=True)
class Fault:
    """What one request gets instead of a normal answer (use the constructors below)."""

    kind: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    after: int = 0
    error_type: str = ""

    @classmethod
    def status_code(cls, status: int, **headers: str) -> Fault:
        """An error answer in the request's wire format; ``retry_after="2"`` and other
        keyword arguments become headers (underscores as dashes)."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        return cls("status", status=status, headers=named)

    @classmethod
    def html(cls, status: int) -> Fault:
        """An HTML error page, as a proxy in front of the provider would send."""
        return cls("html", status=status)

    @classmethod
    def hang(cls) -> Fault:
        """Answer only after :meth:`FakeProvider.release` (or when the server stops)."""
        return cls("hang")

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection without answering."""
        return cls("reset")

    @classmethod
    def bad_json(cls) -> Fault:
        """200 with a complete body that is not valid JSON."""
        return cls("bad_json")

    @classmethod
    def wrong_shape(cls) -> Fault:
        """200 with valid JSON that is not an answer."""
        return cls("wrong_shape")

    @classmethod
    def short_body(cls) -> Fault:
        """200 announcing more bytes than it sends, then the connection drops."""
        return cls("short_body")

    @classmethod
    def cut_stream(cls, after: int) -> Fault:
        """A stream whose connection drops after ``after`` deltas."""
        return cls("cut_stream", after=after)

    @classmethod
    def stop_stream(cls, after: int) -> Fault:
        """A stream that ends cleanly after ``after`` deltas, without its end marker."""
        return cls("stop_stream", after=after)

    @classmethod
    def stream_error(cls, error_type: str, after: int) -> Fault:
        """A stream that reports an error event of ``error_type`` after ``after`` deltas."""
        return cls("stream_error", after=after, error_type=error_type)


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: Mapping[str, str]
    body: Any
    client_port: int | None


class FakeProvider:
    """``async with FakeProvider() as fake:``; point clients at ``fake.openai_base_url`` or
    ``fake.anthropic_base_url``."""

    def __init__(self, *, reply: str = "Hello from the fake provider", model: str = "") -> None:
        self.reply = reply
        self.model = model
        self.requests: list[Recorded] = []
        #: Seconds between a stream's last event and the end of its body.
        self.tail_delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    def __repr__(self) -> str:
        return f"<FakeProvider port={self._port} requests={self.count} faults={len(self._faults)}>"

    # -- control -------------------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests (after those already queued)."""
        self._faults.extend([fault] * times)

    def release(self) -> None:
        """Let hanging requests (and any later ``hang`` fault) answer normally."""
        self._released.set()

    @property
    def count(self) -> int:
        """Requests received so far (any path, faults included)."""
        return len(self.requests)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeProvider:
        app = web.Application()
        app.router.add_post(OPENAI_PATH, self._handle)
        app.router.add_post(ANTHROPIC_PATH, self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()  # let hanging handlers finish, so that cleanup does not wait
        assert self._runner is not None
        await self._runner.cleanup()

    # -- serving -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            Recorded(request.path, dict(request.headers), body, peer[1] if peer else None)
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self._faults.popleft() if self._faults else None
            anthropic = request.path == ANTHROPIC_PATH
            stream = isinstance(body, dict) and bool(body.get("stream"))
            return await self._answer(request, fault, anthropic=anthropic, stream=stream)
        finally:
            self.in_flight -= 1

    async def _answer(
        self, request: web.Request, fault: Fault | None, *, anthropic: bool, stream: bool
    ) -> web.StreamResponse:
        key = request.headers.get("x-api-key") or request.headers.get("Authorization") or ""
        match fault.kind if fault is not None else None:
            case None | "cut_stream" | "stop_stream" | "stream_error" if stream:
                return await self._stream(request, fault, anthropic=anthropic, key=key)
            case None:
                return web.json_response(self._answer_body(anthropic))
            case "status":
                assert fault is not None
                return web.json_response(
                    _error_body(anthropic, fault.status, key),
                    status=fault.status,
                    headers=dict(fault.headers),
                )
            case "html":
                assert fault is not None
                return web.Response(
                    status=fault.status,
                    text="<html><body><h1>Bad gateway</h1></body></html>",
                    content_type="text/html",
                )
            case "hang":
                await self._released.wait()
                return web.json_response(self._answer_body(anthropic))
            case "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            case "bad_json":
                return web.Response(body=b'{"choices": [{"message": {"content": "Hel', **_JSON)
            case "wrong_shape":
                body = b'{"content": 42}' if anthropic else b'{"choices": "nope"}'
                return web.Response(body=body, **_JSON)
            case "short_body":
                response = web.StreamResponse(
                    headers={"Content-Length": "1000", "Content-Type": "application/json"}
                )
                await response.prepare(request)
                await response.write(b'{"choices": [')
                assert request.transport is not None
                request.transport.close()
                return response
        raise AssertionError(f"fault {fault!r} does not apply to this request")

    def _answer_body(self, anthropic: bool) -> dict[str, Any]:
        model = self.model or ("fake-claude" if anthropic else "fake-gpt")
        if anthropic:
            return {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": self.reply}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 11, "output_tokens": 7},
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }

    async def _stream(
        self, request: web.Request, fault: Fault | None, *, anthropic: bool, key: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = _anthropic_events if anthropic else _openai_events
        model = self.model or ("fake-claude" if anthropic else "fake-gpt")
        pieces = _pieces(self.reply)
        limit = fault.after if fault is not None else None
        deltas = 0
        for kind, event in events(model, pieces):
            if kind == "delta":
                if limit is not None and deltas >= limit:
                    break
                deltas += 1
            await response.write(_sse(event, anthropic))
        else:
            if self.tail_delay:  # the body's end in a later packet, as over a real network
                await asyncio.sleep(self.tail_delay)
            await response.write_eof()
            return response
        assert fault is not None
        if fault.kind == "cut_stream":
            assert request.transport is not None
            request.transport.close()
            return response
        if fault.kind == "stream_error":
            error = {"type": fault.error_type, "message": f"fake {fault.error_type} for {key}"}
            event = {"type": "error", "error": error} if anthropic else {"error": error}
            await response.write(_sse(event, anthropic))
        await response.write_eof()
        return response


_JSON: dict[str, Any] = {"content_type": "application/json"}


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def _openai_events(model: str, pieces: list[str]) -> Iterator[tuple[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "c", "object": "chat.completion.chunk", "model": model, "choices": [choice]}

    yield "start", chunk({"role": "assistant", "content": ""})
    for piece in pieces:
        yield "delta", chunk({"content": piece})
    yield "end", chunk({}, "stop")
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    yield "end", {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    yield "end", "[DONE]"


def _anthropic_events(model: str, pieces: list[str]) -> Iterator[tuple[str, Any]]:
    message: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant", "model": model}
    message |= {"content": [], "usage": {"input_tokens": 11, "output_tokens": 1}}
    yield "start", {"type": "message_start", "message": message}
    block = {"type": "text", "text": ""}
    yield "start", {"type": "content_block_start", "index": 0, "content_block": block}
    for piece in pieces:
        delta = {"type": "text_delta", "text": piece}
        yield "delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "end", {"type": "content_block_stop", "index": 0}
    yield "end", {"type": "ping"}
    stop = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    yield "end", stop | {"usage": {"output_tokens": 7}}
    yield "end", {"type": "message_stop"}


def _sse(event: Any, anthropic: bool) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event)
    name = f"event: {event['type']}\n" if anthropic and isinstance(event, dict) else ""
    return f"{name}data: {data}\n\n".encode()


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_body(anthropic: bool, status: int, key: str) -> dict[str, Any]:
    error_type = _ERROR_TYPES.get(status, "api_error")
    message = f"fake error {status}; the request used the key {key!r}"
    if anthropic:
        return {"type": "error", "error": {"type": error_type, "message": message}}
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


@contextlib.contextmanager
def fake_provider_in_thread(**options: Any) -> Iterator[FakeProvider]:
    """A :class:`FakeProvider` served by a loop on its own thread, for tests of code that
    has no loop (or several).  Injecting faults from the test's thread is safe."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with FakeProvider(**options) as fake:
            box["fake"], box["loop"], box["stop"] = (
                fake,
                asyncio.get_running_loop(),
                asyncio.Event(),
            )
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="fake-provider")
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fake provider did not start")
    try:
        yield box["fake"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join()
