"""``POST /v1/chat/completions``: OpenAI Chat Completions, forwarded or translated.

To an OpenAI-wire provider the body goes as received, with only ``model`` rewritten, and the
answer comes back as received (bytes; stream events relayed unchanged), with ``model``
renamed only where the route aliases it.  To an Anthropic provider (an Anthropic route, or
an Anthropic fallback of an OpenAI route) the request, the answer and each stream event are
translated by ``service.llm.translate``; a field with no counterpart is a 400 naming it.

A stream commits to its provider with its first bytes: everything that goes wrong before
(an open breaker, a 5xx, a timeout) gets its own status and the chain's fallbacks; after, the
stream ends with an ``error`` event in OpenAI's streaming shape, since the status line is sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec
from aiohttp import web

from service.gateway.core import (
    POLICY,
    Call,
    Route,
    RouteOf,
    bool_field,
    json_answer,
    new_id,
    note,
    now,
    passed_through,
    post_json,
    read_fields,
    rename_model,
    require_list,
    speaks_anthropic,
    sse_response,
    stream_error,
    string_field,
    untranslatable,
    upstream_error,
    with_model,
)
from service.gateway.relay import chat_end
from service.http import problem_for, start_event_stream
from service.llm.chain import Link
from service.llm.errors import APIError, MalformedResponseError
from service.llm.translate import (
    MessagesStreamToChat,
    UntranslatableError,
    chat_request_to_messages,
    messages_response_to_chat,
    structured_output_requested,
)
from service.llm.wire.anthropic import SHAPE_ERRORS
from service.llm.wire.sse import SSEEvent

logger = logging.getLogger("service.gateway")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])
_DONE = b"data: [DONE]\n\n"


def _openai_wire(link: Link) -> bool:
    return not speaks_anthropic(link)


class ChatCall(Call):
    """One ``/v1/chat/completions`` request."""

    __slots__ = ()

    def _anthropic_body(self, link: Link) -> bytes:
        try:
            body = chat_request_to_messages(
                self.decoded,
                model=self.models[link],
                default_max_tokens=link.provider.settings.max_tokens,
            )
        except UntranslatableError as exc:
            raise untranslatable(link, exc) from None
        return _encoder.encode(body)

    # -- one answer ----------------------------------------------------------------------------

    async def answer(self, link: Link) -> bytes:
        if speaks_anthropic(link):
            payload, _ = await post_json(
                self.transport, link, "/v1/messages", self._anthropic_body(link)
            )
            try:
                chat = messages_response_to_chat(
                    _decoder.decode(payload),
                    model=self.route.name,
                    structured=structured_output_requested(self.decoded),
                )
            except SHAPE_ERRORS as exc:  # msgspec.DecodeError is a ValueError
                raise MalformedResponseError(
                    f"invalid Messages answer: {exc}", provider=link.name
                ) from None
            return _encoder.encode(chat)
        payload, _ = await post_json(
            self.transport, link, "/chat/completions", with_model(self.fields, self.models[link])
        )
        renamed = self.renamed(link)
        return payload if renamed is None else rename_model(payload, renamed)

    # -- a stream ------------------------------------------------------------------------------

    def stream(self, link: Link) -> AsyncGenerator[bytes, None]:
        if speaks_anthropic(link):
            return self._translated_stream(link)
        return self.relayed(link, "/chat/completions", chat_end)

    def _translated_stream(self, link: Link) -> AsyncGenerator[bytes, None]:
        body = self._anthropic_body(link)
        options = self.decoded.get("stream_options")
        translator = MessagesStreamToChat(
            model=self.route.name,
            completion_id=new_id("chatcmpl-"),
            created=now(),
            include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
            structured=structured_output_requested(self.decoded),
        )

        def step(event: SSEEvent) -> tuple[bytes, bool]:
            data = _decoder.decode(event.data)
            kind = event.event or str(data.get("type", ""))
            if kind == "error":  # the provider failed mid-stream: the chain and breaker judge it
                raise stream_error(link, data.get("error") or {})
            chunks = translator.feed(kind, data)
            out = b"".join(b"data: " + _encoder.encode(c) + b"\n\n" for c in chunks)
            return out, translator.done

        return self.translated(
            link, "/v1/messages", body, step, what="Messages stream event", last=_DONE
        )


async def handle(route_of: RouteOf, request: web.Request) -> web.StreamResponse:
    """The handler; ``route_of(model)`` finds the route (404 when there is none)."""
    fields = await read_fields(request)
    route: Route = route_of(string_field(fields, "model"))
    note(request, route, None)  # the access log and metrics name the route, failures included
    require_list(fields, "messages")
    call = ChatCall(route, fields)
    chain = route.client.chain
    if not bool_field(fields, "stream"):
        try:
            payload, link = await chain.call(call.answer, POLICY)
        except APIError as exc:
            if passed_through(exc, route, _openai_wire):
                return upstream_error(exc)
            raise
        note(request, route, link)
        return json_answer(payload, link)
    try:
        link, source, first = await chain.stream(call.stream, POLICY)
    except APIError as exc:
        if passed_through(exc, route, _openai_wire):
            return upstream_error(exc)
        raise
    note(request, route, link)
    return await write_stream(request, link, source, first, error_event=_chat_error)


def _chat_error(exc: APIError) -> bytes:
    return b"data: " + _encoder.encode(problem_for(exc).body()) + b"\n\n"


async def write_stream(
    request: web.Request,
    link: Link,
    source: AsyncGenerator[bytes, None],
    first: list[bytes],
    *,
    error_event: Callable[[APIError], bytes],
) -> web.StreamResponse:
    """Send a committed stream to the client: ``first`` then the rest of ``source``.  A
    failure of the upstream after the first bytes ends the stream with ``error_event(exc)``;
    a client that leaves closes the upstream stream (which its breaker ignores)."""
    response = sse_response(link)
    try:
        await start_event_stream(request, response)
        for batch in first:
            await response.write(batch)
        try:
            async for batch in source:
                await response.write(batch)
        except APIError as exc:
            # The status line is gone: report the failure inside the stream.
            logger.warning("stream from %s broke: %s", link.name, exc)
            await response.write(error_event(exc))
        await response.write_eof()
    except ConnectionResetError:
        logger.info("client left during a stream from %s", link.name)
    finally:
        await source.aclose()
    return response
