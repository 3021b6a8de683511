"""``POST /v1/chat/completions``: an OpenAI-compatible gateway over the LLM client.

The request's ``model`` picks a route from the config; each route is one
:class:`~service.llm.client.LLMClient` whose chain is the route's provider and then its
fallbacks, each provider behind its own breaker (``<provider>_client`` in the registry,
created here from its ``[breakers.*]`` table with the LLM error policy).  Calls are made with
``use_fallback=False``: an API client must learn that nobody answered (503 with
``Retry-After``), not receive an apology as if it were the model's answer.

Errors are raised and mapped to statuses by :func:`service.http.problem_for`, the one mapping.
A stream commits to its status with its first delta: everything that goes wrong before it
(an open breaker, a 5xx, a timeout) gets a proper error status; after it, the stream ends with
an ``error`` event in OpenAI's streaming shape, since the status line has been sent.

Which provider answered is in the ``X-Breakerd-Provider`` response header.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from aiohttp import web

from service.circuit_breaker import get_circuit_breaker
from service.config import ServiceConfig
from service.http import Problem, json_response, problem_for, read_json
from service.llm.schema import Message
from service.llm.settings import KINDS
from service.llm_client import (
    LLMClient,
    LLMResponse,
    LLMStream,
    Usage,
    get_llm_client,
    llm_breaker_config,
)
from service.simulator import Api, Simulator

logger = logging.getLogger("service.gateway")

PROVIDER_HEADER = "X-Breakerd-Provider"


# -- providers: config + environment -> what the LLM client needs -----------------------------


class ProviderTarget:
    """One configured provider, resolved against the environment.  Its repr hides the key."""

    __slots__ = ("api_key", "base_url", "key_env", "name", "section_kind", "simulated", "table")

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        key_env: str,
        api_key: str | None,
        base_url: str | None,
        table: str,
        simulated: bool = False,
    ) -> None:
        self.name = name
        self.section_kind = kind
        self.key_env = key_env
        self.api_key = api_key
        self.base_url = base_url
        self.table = table
        self.simulated = simulated

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        where = "simulator" if self.simulated else (self.base_url or "default URL")
        return f"<ProviderTarget {self.name!r} {self.section_kind} key={key} at={where}>"

    @property
    def needs_key(self) -> bool:
        return KINDS[self.section_kind].key_required

    @property
    def usable(self) -> bool:
        """Whether calls can be made (the key, if the kind needs one, is there)."""
        return bool(self.api_key) or not self.needs_key

    def at_simulator(self, simulator: Simulator) -> ProviderTarget:
        """This provider served by ``simulator``, in its wire format."""
        api: Api = "anthropic" if self.section_kind == "anthropic" else "openai"
        return ProviderTarget(
            self.name,
            self.section_kind,
            key_env=self.key_env,
            api_key="simulator",
            base_url=simulator.base_url(api),
            table=self.table,
            simulated=True,
        )


def resolve_providers(
    config: ServiceConfig, environ: Mapping[str, str]
) -> tuple[dict[str, ProviderTarget], list[str]]:
    """Every provider with its key from ``environ``, and the names of those the simulator
    must serve.

    ``simulator.mode``: ``on``: all of them; ``off``: none; ``auto``: when no provider has a
    key, those that need one (a key-less local server, ``openai_compatible``, stays put).
    """
    targets: dict[str, ProviderTarget] = {}
    for name, section in config.providers.items():
        key_env = section.api_key_env or KINDS[section.kind].key_env
        targets[name] = ProviderTarget(
            name,
            section.kind,
            key_env=key_env,
            api_key=environ.get(key_env) or None,
            base_url=section.base_url,
            table=config.provider_breaker(name),
        )
    mode = config.simulator.mode
    if mode == "on":
        return targets, list(targets)
    if mode == "auto" and not any(target.api_key for target in targets.values()):
        return targets, [name for name, target in targets.items() if target.needs_key]
    return targets, []


# -- the request ---------------------------------------------------------------------------


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Chat Completions fields this gateway understands.  Others are refused rather than
    silently dropped (``tools`` ignored would be a wrong answer, not a degraded one).
    ``user`` is accepted and not forwarded."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    user: str | None = None

    def params(self) -> dict[str, Any]:
        """The sampling parameters to forward (named the same in both wire formats)."""
        params: dict[str, Any] = {}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.top_p is not None:
            params["top_p"] = self.top_p
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            params["max_tokens"] = limit
        return params

    def message_dicts(self) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(message) for message in self.messages]


# -- the gateway ---------------------------------------------------------------------------


class Route:
    """One ``[routes.*]`` entry: its client and the upstream model of its first provider."""

    __slots__ = ("client", "model", "name")

    def __init__(self, name: str, client: LLMClient, model: str) -> None:
        self.name = name
        self.client = client
        self.model = model

    def __repr__(self) -> str:
        return f"<Route {self.name!r} model={self.model!r} chain={self.client.providers}>"


class Gateway:
    """Routes chat completions to LLM clients.  Handlers run on the service's loop.

    Creating it creates every provider's breaker (so that ``GET /breakers`` lists them from
    the start) and one client per route.  Raises ``ValueError`` when a breaker of the same name
    already exists in the registry with another config.
    """

    def __init__(self, config: ServiceConfig, providers: Mapping[str, ProviderTarget]) -> None:
        self.config = config
        self.providers = dict(providers)
        for target in self.providers.values():
            get_circuit_breaker(
                f"{target.name}_client",
                llm_breaker_config(**config.breaker_settings(target.table)),
            )
        self.routes = {name: self._route(name) for name in config.routes}

    def __repr__(self) -> str:
        return f"<Gateway routes={sorted(self.routes)}>"

    def _options(self, name: str) -> dict[str, Any]:
        target, section = self.providers[name], self.config.providers[name]
        options: dict[str, Any] = {
            "provider": section.kind,
            "name": name,
            "model": section.model,
            "timeout": section.timeout,
            "connect_timeout": section.connect_timeout,
        }
        if target.api_key:
            options["api_key"] = target.api_key
        else:
            options["api_key_env"] = target.key_env  # named in the error at the first call
        if target.base_url:
            options["base_url"] = target.base_url
        return options

    def _route(self, name: str) -> Route:
        section = self.config.routes[name]
        fallbacks = []
        for fallback in section.fallbacks:
            if self.providers[fallback].usable:
                fallbacks.append(self._options(fallback))
            else:
                logger.warning(
                    "route %r: fallback provider %r has no API key (%s); the route runs without it",
                    name,
                    fallback,
                    self.providers[fallback].key_env,
                )
        primary = self.providers[section.provider]
        if not primary.usable:
            logger.warning(
                "route %r: provider %r has no API key (%s); its requests fail until it is set",
                name,
                section.provider,
                primary.key_env,
            )
        options = self._options(section.provider)
        client = get_llm_client(fallback_providers=fallbacks, **options)
        return Route(name, client, section.model or name)

    async def aclose(self) -> None:
        """Close every route's HTTP sessions."""
        for route in self.routes.values():
            await route.client.aclose()

    # -- the handler -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body: ChatCompletionRequest = await read_json(request, ChatCompletionRequest)
        route = self.routes.get(body.model)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none configured"
            raise Problem(
                404,
                f"model {body.model!r} has no route; configured models: {known}",
                code="model_not_found",
                param="model",
            )
        if body.stream:
            return await self._stream(request, route, body)
        answer = await route.client.complete_async(
            body.message_dicts(), model=route.model, use_fallback=False, **body.params()
        )
        return json_response(_completion(answer), headers={PROVIDER_HEADER: answer.provider})

    async def _stream(
        self, request: web.Request, route: Route, body: ChatCompletionRequest
    ) -> web.StreamResponse:
        stream = route.client.stream_async(
            body.message_dicts(), model=route.model, use_fallback=False, **body.params()
        )
        async with stream:
            # Until the first delta nothing is committed: errors get their real status.
            first: str | None
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                first = None
            chunks = _ChunkWriter(stream, route.model)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    PROVIDER_HEADER: stream.provider or "",
                }
            )
            await response.prepare(request)
            try:
                await response.write(chunks.chunk({"role": "assistant", "content": ""}))
                if first is not None:
                    await response.write(chunks.chunk({"content": first}))
                    try:
                        async for delta in stream:
                            await response.write(chunks.chunk({"content": delta}))
                    except Exception as exc:
                        # The status line is gone: report the failure inside the stream.
                        problem = problem_for(exc)
                        logger.warning("stream from %s broke: %s", stream.provider, exc)
                        await response.write(_sse(problem.body()))
                        await response.write_eof()
                        return response
                finish = stream.finish_reason or "stop"
                await response.write(chunks.chunk({}, finish))
                if body.stream_options is not None and body.stream_options.include_usage:
                    await response.write(chunks.usage(stream.usage))
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
            except ConnectionResetError:
                logger.info("client left during a stream from %s", stream.provider)
        return response


class _ChunkWriter:
    """``chat.completion.chunk`` events sharing one id."""

    def __init__(self, stream: LLMStream, model: str) -> None:
        self.stream = stream
        self.id = _completion_id()
        self.created = int(time.time())
        self.model = model

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.stream.model or self.model,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**self._base(), "choices": [choice]})

    def usage(self, usage: Usage | None) -> bytes:
        return _sse({**self._base(), "choices": [], "usage": _usage(usage)})


def _sse(data: Any) -> bytes:
    return b"data: " + msgspec.json.encode(data) + b"\n\n"


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _usage(usage: Usage | None) -> dict[str, int] | None:
    return None if usage is None else msgspec.structs.asdict(usage)


def _completion(answer: LLMResponse) -> dict[str, Any]:
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.content},
                "finish_reason": answer.finish_reason or "stop",
            }
        ],
        "usage": _usage(answer.usage),
    }
