"""What every gateway endpoint shares: routes, the request body kept raw, forwarding bytes
through the chain, model aliasing, and what the access log learns about a request.

Bodies stay raw.  The gateway decodes only the top level of a request
(``dict[str, msgspec.Raw]``: each value is kept as its bytes), checks the few fields it needs
(``model``, and per endpoint ``messages`` / ``input`` and ``stream``), rewrites ``model`` and
encodes the dict again, which copies the other values byte for byte.  Everything else is the
provider's to judge: its 4xx comes back to the client as the provider wrote it (and the
breaker ignores it).  Answers are forwarded as received, with ``model`` rewritten only where
the route aliases it (the client asked for ``fast``, the upstream model is ``gpt-4o-mini``).
A body is decoded in full only when the serving provider speaks the other wire format and
``service.llm.translate`` must translate it.

Headers are not forwarded: each upstream gets its provider's own (its key included), never
the client's.  An endpoint may name a few of the client's headers that mean something to
providers of the client's own wire format (``/v1/messages`` forwards ``anthropic-beta``); a
:class:`Call` sends those to such providers only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from service.gateway.relay import EndMarker, relay
from service.http import Problem, read_json, retry_after_header
from service.llm.chain import Link
from service.llm.client import DEFAULT_BREAKER_CONFIG, LLMClient
from service.llm.errors import (
    APIError,
    InvalidRequestError,
    MalformedResponseError,
    RateLimitError,
    error_for_type,
)
from service.llm.translate import UntranslatableError
from service.llm.transport import Stream, Transport
from service.llm.wire.anthropic import SHAPE_ERRORS, AnthropicMessages
from service.llm.wire.sse import SSEEvent
from service.logs import REQUEST_INFO

logger = logging.getLogger("service.gateway")

PROVIDER_HEADER = "X-Breakerd-Provider"

Fields = dict[str, msgspec.Raw]

#: The failure policy for links without a breaker (the LLM error policy).
POLICY = DEFAULT_BREAKER_CONFIG

_encoder = msgspec.json.Encoder()
_ids = itertools.count(1)
_PREFIX = os.urandom(6).hex()


def new_id(prefix: str) -> str:
    """A unique id (``chatcmpl-...``, ``msg_...``): a per-process random prefix and a counter,
    cheaper than a uuid4 per request and unique across restarts all the same."""
    return f"{prefix}{_PREFIX}{next(_ids):08x}"


def now() -> int:
    return int(time.time())


class Route:
    """One ``[routes.*]`` entry: its client (the chain of links: breakers, cooldowns, slots)
    and the upstream model of its first provider."""

    __slots__ = ("client", "model", "name")

    def __init__(self, name: str, client: LLMClient, model: str) -> None:
        self.name = name
        self.client = client
        self.model = model

    def __repr__(self) -> str:
        return f"<Route {self.name!r} model={self.model!r} chain={self.client.providers}>"

    def models(self) -> dict[Link, str]:
        """The model each link sends (raises when a provider cannot be called as configured)."""
        return self.client.check(self.model)

    def aliased(self, upstream: str) -> bool:
        """Whether the client's model name differs from what the upstream was sent."""
        return upstream != self.name


#: Finds the route for a request's ``model`` (raises the 404 when there is none).
RouteOf = Callable[[str], Route]

#: One event of a stream in the other wire format, judged and translated (see
#: :meth:`Call.translated`): the bytes to write for it, and whether it ended the stream.
Step = Callable[[SSEEvent], tuple[bytes, bool]]


# -- request bodies ------------------------------------------------------------------------------


async def read_fields(request: web.Request) -> Fields:
    """The body's top level, values kept raw; 400 unless it is a JSON object."""
    fields: Fields = await read_json(request, Fields)
    return fields


def string_field(fields: Fields, name: str) -> str:
    """A required, non-empty string field; 400 naming it otherwise."""
    raw = fields.get(name)
    if raw is None:
        raise Problem(400, f"{name}: required", param=name)
    try:
        value = msgspec.json.decode(raw, type=str)
    except msgspec.DecodeError:
        raise Problem(400, f"{name}: expected a string", param=name) from None
    if not value:
        raise Problem(400, f"{name}: expected a non-empty string", param=name)
    return value


def bool_field(fields: Fields, name: str) -> bool:
    """An optional boolean field (false when absent or null); 400 naming it otherwise."""
    raw = fields.get(name)
    if raw is None:
        return False
    try:
        value = msgspec.json.decode(raw, type=bool | None)
    except msgspec.DecodeError:
        raise Problem(400, f"{name}: expected a boolean", param=name) from None
    return bool(value)


def require_list(fields: Fields, name: str) -> None:
    """A required field that must be a JSON array (only its first byte is looked at)."""
    raw = fields.get(name)
    if raw is None:
        raise Problem(400, f"{name}: required", param=name)
    if not bytes(raw).lstrip().startswith(b"["):
        raise Problem(400, f"{name}: expected an array", param=name)


def with_model(fields: Fields, model: str, **extra: Any) -> bytes:
    """The body again with ``model`` (and ``extra`` fields) set, other values untouched."""
    out = dict(fields)
    out["model"] = msgspec.Raw(_encoder.encode(model))
    for name, value in extra.items():
        out[name] = msgspec.Raw(_encoder.encode(value))
    return _encoder.encode(out)


def decode_all(fields: Fields) -> dict[str, Any]:
    """The whole body as plain values, for translation."""
    return {name: msgspec.json.decode(raw) for name, raw in fields.items()}


def rename_model(payload: bytes, model: str) -> bytes:
    """A JSON object answer with its top-level ``model`` set to ``model`` (other values kept
    byte for byte).  Anything that is not an object is returned as it is."""
    try:
        fields = msgspec.json.decode(payload, type=Fields)
    except msgspec.DecodeError:
        return payload
    fields["model"] = msgspec.Raw(_encoder.encode(model))
    return _encoder.encode(fields)


def untranslatable(link: Link, exc: UntranslatableError) -> InvalidRequestError:
    """A request the serving provider's format cannot express: the client's 400."""
    return InvalidRequestError(
        f"{exc.field}: cannot be sent to {link.name!r} ({exc.reason})", provider=link.name
    )


def untranslatable_answer(link: Link, exc: UntranslatableError) -> InvalidRequestError:
    """An answer, valid in the provider's own format, that the client's format cannot carry
    (a stream interleaving parallel tool calls' arguments, tool arguments that are not a JSON
    object).  That is the translation's limit, not the provider's fault: an
    ``InvalidRequestError`` is one no breaker counts, and it names the field."""
    return InvalidRequestError(
        f"the answer of {link.name!r} cannot be expressed in this API's format: "
        f"{exc.field}: {exc.reason}",
        provider=link.name,
    )


def stream_error(link: Link, error: Mapping[str, Any]) -> APIError:
    """The error for an error event inside ``link``'s 2xx stream (its ``type`` and
    ``message``): raised, so that the chain and the breaker judge it as they would the
    same error answered with a status."""
    return error_for_type(
        link.name,
        error.get("type"),
        str(error.get("message") or ""),
        secret=link.provider.secret,
    )


class Call:
    """One request on its route: its raw fields, the model each link sends, the transport,
    the body decoded once (only if a provider of the other format needs it translated), and
    ``forwarded``: the client's headers that providers of its own wire format get too."""

    __slots__ = ("_decoded", "fields", "forwarded", "models", "route", "transport")

    def __init__(
        self, route: Route, fields: Fields, *, forwarded: Mapping[str, str] | None = None
    ) -> None:
        self.route = route
        self.fields = fields
        self.forwarded: Mapping[str, str] = forwarded or {}
        self.models = route.models()
        self.transport = route.client.sessions.get()
        self._decoded: dict[str, Any] | None = None

    @property
    def decoded(self) -> dict[str, Any]:
        if self._decoded is None:
            self._decoded = decode_all(self.fields)
        return self._decoded

    def renamed(self, link: Link) -> str | None:
        """The model name to put in ``link``'s answers, when the route aliases it."""
        return self.route.name if self.route.aliased(self.models[link]) else None

    async def relayed(self, link: Link, path: str, end: EndMarker) -> AsyncGenerator[bytes, None]:
        """A stream from a provider of the client's own wire format: the body forwarded with
        only ``model`` rewritten, the events relayed as they come (see :func:`relay`)."""
        body = with_model(self.fields, self.models[link])
        stream = await open_stream(self.transport, link, path, body, headers=self.forwarded)
        batches = relay(link.provider, stream, end=end, model=self.renamed(link))
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def translated(
        self, link: Link, path: str, body: bytes, step: Step, *, what: str, last: bytes = b""
    ) -> AsyncGenerator[bytes, None]:
        """A stream from a provider of the other wire format: ``body`` (already translated)
        POSTed to ``path``, and each upstream event passed to ``step``, whose bytes are
        written, until it says the stream ended; then the upstream stream is released and
        ``last`` is written (Chat Completions' ``[DONE]``).

        ``step`` does no I/O: it raises the mapped :class:`APIError` for the upstream's error
        event (see :func:`stream_error`), :class:`UntranslatableError` for an answer the
        client's format cannot carry (the client's 400, see :func:`untranslatable_answer`), and
        one of ``SHAPE_ERRORS`` for an event that is not what the format says
        (:class:`MalformedResponseError` naming ``what``, the breaker counts it).  A stream that
        ends before ``step`` saw its end did not complete: :class:`MalformedResponseError`.
        """
        stream = await open_stream(self.transport, link, path, body)
        ended = False
        try:
            async with contextlib.aclosing(link.provider.events(stream)) as events:
                async for event in events:
                    try:
                        out, ended = step(event)
                    except UntranslatableError as exc:  # before SHAPE_ERRORS: a ValueError
                        raise untranslatable_answer(link, exc) from None
                    except SHAPE_ERRORS as exc:  # msgspec.DecodeError is a ValueError
                        raise MalformedResponseError(
                            f"invalid {what}: {exc!r}", provider=link.name
                        ) from None
                    if out:
                        yield out
                    if ended:
                        break
        finally:
            stream.release()
        if not ended:
            raise MalformedResponseError(
                "the stream ended before its end marker", provider=link.name
            )
        if last:
            yield last


# -- forwarding ------------------------------------------------------------------------------


def speaks_anthropic(link: Link) -> bool:
    return isinstance(link.provider.settings.wire, AnthropicMessages)


def upstream_headers(
    link: Link, *, stream: bool, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The provider's request headers (its key included) in its own wire format, then
    ``extra``: client headers the caller forwards (never the client's key)."""
    headers = link.provider.settings.wire.headers(link.provider.secret, stream=stream)
    return {**headers, **extra} if extra else headers


async def post_json(
    transport: Transport,
    link: Link,
    path: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, Mapping[str, str]]:
    """POST ``body`` to ``path`` under the link's base URL, with ``headers`` besides the
    provider's own; the whole 2xx answer."""
    provider = link.provider
    return await provider.fetch(
        transport,
        provider.base_url.rstrip("/") + path,
        body,
        upstream_headers(link, stream=False, extra=headers),
        None,
    )


async def open_stream(
    transport: Transport,
    link: Link,
    path: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
) -> Stream:
    """POST a streaming request (``headers`` as for :func:`post_json`); the open 2xx answer
    (the caller releases it)."""
    provider = link.provider
    return await provider.open(
        transport,
        provider.base_url.rstrip("/") + path,
        body,
        upstream_headers(link, stream=True, extra=headers),
        None,
    )


def json_answer(payload: bytes, link: Link, *, status: int = 200) -> web.Response:
    return web.Response(
        body=payload,
        status=status,
        content_type="application/json",
        headers={PROVIDER_HEADER: link.name},
    )


def sse_response(link: Link) -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            PROVIDER_HEADER: link.name,
        }
    )


def passed_through(exc: APIError, route: Route, same_wire: Callable[[Link], bool]) -> bool:
    """Whether a provider's own 4xx answer can go to the client as it is: the client's own
    mistake or rate limit, from a provider of the client's wire format (else its shape would
    be foreign to the client)."""
    if not isinstance(exc, InvalidRequestError | RateLimitError) or exc.upstream_body is None:
        return False  # a 401/403 is about our key, not the client's: that stays a 502
    link = next((link for link in route.client.chain.links if link.name == exc.provider), None)
    return link is not None and same_wire(link)


def upstream_error(exc: APIError) -> web.Response:
    """The provider's own error answer (its status and body; the key was redacted)."""
    assert exc.upstream_body is not None and exc.status is not None
    headers = {PROVIDER_HEADER: exc.provider}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = retry_after_header(retry_after)
    return web.Response(
        body=exc.upstream_body, status=exc.status, content_type="application/json", headers=headers
    )


# -- what the access log learns ----------------------------------------------------------------


def note(request: web.Request, route: Route, link: Link | None) -> None:
    """Tell the access log (``service.logs``) which route and provider served the request."""
    info = request.get(REQUEST_INFO)
    if info is None:
        return
    info.route = route.name
    if link is not None:
        info.provider = link.name
        info.fallback = link is not route.client.chain.links[0]
