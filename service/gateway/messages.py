"""``POST /v1/messages`` (Anthropic-compatible, stream and tools included) and
``POST /v1/messages/count_tokens``.

The mirror of ``chat``: to an Anthropic provider the body goes as received (``model``
rewritten) and the answer or the stream's events come back unchanged (``model`` renamed
where the route aliases it); to an OpenAI-wire provider (an OpenAI route, or an OpenAI
fallback of an Anthropic route) the request, the answer and the stream are translated by
``service.llm.translate`` (direction 2).  Errors are answered in Anthropic's shape,
``{"type": "error", "error": {"type", "message"}}``, with the statuses and headers of the
one mapping in ``service.http`` (``Retry-After``, ``x-should-retry``).

``count_tokens`` has no Chat Completions counterpart: it is passed through for Anthropic
routes (whose first provider is Anthropic), to their Anthropic providers only; any other route
answers a 400 that says so.

Of the client's headers, only ``anthropic-beta`` (the SDK's ``betas=[...]``: features a
request opts into) is forwarded, to Anthropic-wire providers, beside the headers the wire
format sets; the client's ``x-api-key`` / ``authorization`` never are (each provider gets its
own key).  An OpenAI-wire provider does not get it: the header means nothing there, and the
translated request carries only what Chat Completions can say, so it is dropped silently.
Its value is checked only for what the transport cannot send (a line break, a character
beyond Latin-1): that is the client's 400, not a failure for the provider's breaker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from aiohttp import web

from service.gateway.chat import write_stream
from service.gateway.core import (
    POLICY,
    Call,
    Route,
    RouteOf,
    bool_field,
    json_answer,
    new_id,
    note,
    passed_through,
    post_json,
    read_fields,
    rename_model,
    require_list,
    speaks_anthropic,
    stream_error,
    string_field,
    untranslatable,
    untranslatable_answer,
    upstream_error,
    with_model,
)
from service.gateway.relay import messages_end
from service.http import Problem, json_response, problem_for
from service.llm.chain import Link
from service.llm.errors import APIError, MalformedResponseError
from service.llm.translate import (
    ChatStreamToMessages,
    UntranslatableError,
    chat_response_to_messages,
    messages_request_to_chat,
)
from service.llm.translate.vocab import ANTHROPIC_ERROR_TYPES
from service.llm.wire.anthropic import SHAPE_ERRORS
from service.llm.wire.sse import SSEEvent

logger = logging.getLogger("service.gateway")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])

#: Anthropic's error ``type`` for each status the gateway answers with: Anthropic's own, and
#: its "overloaded" for the gateway's 503 (every provider open, saturated, shutting down).
_ERROR_TYPES = {**ANTHROPIC_ERROR_TYPES, 503: "overloaded_error"}


#: The one client header forwarded (to Anthropic-wire providers only).
BETA_HEADER = "anthropic-beta"


def forwarded_headers(request: web.Request) -> dict[str, str]:
    """The client's ``anthropic-beta`` to forward (repeated headers joined by commas, as HTTP
    reads them), or nothing.  Raises the 400 for a value the transport cannot send."""
    values = request.headers.getall(BETA_HEADER, ())
    if not values:
        return {}
    value = ",".join(values)
    if "\r" in value or "\n" in value or not (value.isascii() or max(value) <= "\xff"):
        # aiohttp decodes a header's bytes as UTF-8; the transport writes Latin-1.
        raise Problem(
            400,
            f"{BETA_HEADER}: not a header value that can be sent on "
            "(a line break, or a character beyond Latin-1)",
        )
    return {BETA_HEADER: value}


def error_body(problem: Problem) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(problem.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": problem.message}}


def error_response(exc: BaseException, request: web.Request) -> web.Response:
    """Any failure of a ``/v1/messages*`` request, in Anthropic's error shape."""
    problem = problem_for(exc)
    if problem.status == 500:
        logger.error("%s %s failed", request.method, request.path, exc_info=exc)
    return json_response(error_body(problem), status=problem.status, headers=problem.headers)


class MessagesCall(Call):
    """One ``/v1/messages`` request."""

    __slots__ = ()

    def _chat_body(self, link: Link, *, stream: bool) -> bytes:
        try:
            body = messages_request_to_chat(self.decoded, model=self.models[link])
        except UntranslatableError as exc:
            raise untranslatable(link, exc) from None
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return _encoder.encode(body)

    async def answer(self, link: Link) -> bytes:
        if speaks_anthropic(link):
            body = with_model(self.fields, self.models[link])
            payload, _ = await post_json(
                self.transport, link, "/v1/messages", body, headers=self.forwarded
            )
            renamed = self.renamed(link)
            return payload if renamed is None else rename_model(payload, renamed)
        payload, _ = await post_json(
            self.transport, link, "/chat/completions", self._chat_body(link, stream=False)
        )
        try:
            message = chat_response_to_messages(_decoder.decode(payload), model=self.route.name)
        except UntranslatableError as exc:
            raise untranslatable_answer(link, exc) from None
        except SHAPE_ERRORS as exc:  # msgspec.DecodeError is a ValueError
            raise MalformedResponseError(
                f"invalid Chat Completions answer: {exc}", provider=link.name
            ) from None
        return _encoder.encode(message)

    def stream(self, link: Link) -> AsyncGenerator[bytes, None]:
        if speaks_anthropic(link):
            return self.relayed(link, "/v1/messages", messages_end)
        return self._translated_stream(link)

    def _translated_stream(self, link: Link) -> AsyncGenerator[bytes, None]:
        body = self._chat_body(link, stream=True)
        translator = ChatStreamToMessages(model=self.route.name, message_id=new_id("msg_"))

        def step(event: SSEEvent) -> tuple[bytes, bool]:
            if event.data == "[DONE]":
                return _events(translator.finish()), True
            chunk = _decoder.decode(event.data)
            error = chunk.get("error")
            if error is not None:  # the provider failed mid-stream: the chain and breaker judge it
                raise stream_error(
                    link, error if isinstance(error, dict) else {"message": str(error)}
                )
            return _events(translator.feed(chunk)), False

        return self.translated(
            link, "/chat/completions", body, step, what="Chat Completions stream chunk"
        )


def _events(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + _encoder.encode(data) + b"\n\n"
        for name, data in events
    )


def _stream_error(exc: APIError) -> bytes:
    return _events([("error", error_body(problem_for(exc)))])


async def handle(route_of: RouteOf, request: web.Request) -> web.StreamResponse:
    route: Route | None = None
    try:
        fields = await read_fields(request)
        route = route_of(string_field(fields, "model"))
        note(request, route, None)  # the access log and metrics name the route, failures included
        require_list(fields, "messages")
        call = MessagesCall(route, fields, forwarded=forwarded_headers(request))
        chain = route.client.chain
        if not bool_field(fields, "stream"):
            payload, link = await chain.call(call.answer, POLICY)
            note(request, route, link)
            return json_answer(payload, link)
        link, source, first = await chain.stream(call.stream, POLICY)
    except APIError as exc:
        if route is not None and passed_through(exc, route, speaks_anthropic):
            return upstream_error(exc)
        return error_response(exc, request)
    except Exception as exc:
        return error_response(exc, request)
    note(request, route, link)
    return await write_stream(request, link, source, first, error_event=_stream_error)


async def count_tokens(route_of: RouteOf, request: web.Request) -> web.Response:
    route: Route | None = None
    try:
        fields = await read_fields(request)
        route = route_of(string_field(fields, "model"))
        links = [link for link in route.client.chain.links if speaks_anthropic(link)]
        if not speaks_anthropic(route.client.chain.links[0]):
            raise Problem(
                400,
                f"model {route.name!r} is not an Anthropic route: count_tokens is an Anthropic "
                "endpoint with no Chat Completions counterpart",
                param="model",
            )
        models = route.models()
        transport = route.client.sessions.get()
        forwarded = forwarded_headers(request)

        async def attempt(link: Link) -> bytes:
            body = with_model(fields, models[link])
            payload, _ = await post_json(
                transport, link, "/v1/messages/count_tokens", body, headers=forwarded
            )
            return payload

        payload, link = await route.client.chain.call(attempt, POLICY, links)
    except APIError as exc:
        if route is not None and passed_through(exc, route, speaks_anthropic):
            return upstream_error(exc)
        return error_response(exc, request)
    except Exception as exc:
        return error_response(exc, request)
    note(request, route, link)
    return json_answer(payload, link)
