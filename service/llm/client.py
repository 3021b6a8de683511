"""The LLM client: per-provider breakers, a fallback chain, fallback text, a sync facade.

How a call goes (``complete_async`` and ``stream_async`` alike):

1. The messages are validated and every provider in the chain is checked for a key, a base
   URL and a model, before anything is sent (a configuration mistake is loud and immediate).
2. Each provider is tried in order by the chain (``service.llm.chain``: its breaker,
   ``<name>_client`` in the registry and shared by every client of that provider, its
   rate-limit cooldown and its connection slots).  A rejection, a cooldown, a 429 (unless
   ``fallback_on_rate_limit=False``), local saturation, or a failure the breaker counts (5xx,
   timeouts, resets, malformed answers) passes the call to the next provider.  Any other
   error (invalid request, bad key) is raised at once: another provider would not make it
   right, and hiding it would hide the caller's bug.
3. When no provider answered: every provider open or cooling gives the soonest retry time
   (a ``RateLimitError`` when all cool down); otherwise the last failure is raised with the
   earlier ones as notes.  An open breaker's rejection becomes the fallback text
   (``is_fallback=True``), or :class:`CircuitOpenAPIError` with ``use_fallback=False``.

A stream commits to a provider when its first delta arrives: before that, the chain applies
as above; after it, a failure is raised from the iteration (and counted by that provider's
breaker, which guards the whole stream, from the request to the end marker).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio.to_thread

from actors.breaker import Breaker
from actors.errors import ConfigurationError
from actors.system import ActorSystem, default_system
from service.circuit_breaker import CircuitBreakerConfig, get_circuit_breaker
from service.llm.chain import Chain, Link
from service.llm.cooldown import cooldown_for
from service.llm.errors import (
    APIError,
    AuthenticationError,
    CircuitOpenAPIError,
    InvalidRequestError,
    NetworkTimeoutError,
    ProviderConfigurationError,
    ProviderSaturatedError,
    RateLimitError,
    ServiceUnavailableError,
)
from service.llm.facade import LoopThread
from service.llm.provider import Provider, shared_slots
from service.llm.schema import ChatRequest, Delta, LLMResponse, StreamResult, build_request
from service.llm.sessions import SessionPool
from service.llm.settings import DEFAULT_POOL_SIZE, ProviderOptions, ProviderSettings
from service.llm.stream import LLMStream

logger = logging.getLogger("service.llm")

DEFAULT_FALLBACK_TEXT = (
    "I apologize, but the AI service is currently experiencing issues. "
    "Please try again in a few moments."
)

#: The seed's policy: provider errors count against the breaker...
LLM_EXPECTED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    APIError,
    ServiceUnavailableError,
    NetworkTimeoutError,
)
#: ...except the caller's own: its quota, its bad request, its bad key or configuration (see
#: the errors module for why a bad key is not the provider's fault), and our own saturation.
LLM_IGNORED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    RateLimitError,
    InvalidRequestError,
    AuthenticationError,
    ProviderConfigurationError,
    ProviderSaturatedError,
)


def llm_breaker_config(**fields: Any) -> CircuitBreakerConfig:
    """A :class:`CircuitBreakerConfig` with the LLM error policy; ``fields`` override anything
    (e.g. ``llm_breaker_config(failure_threshold=3, timeout_duration=30.0)``)."""
    policy: dict[str, Any] = {
        "expected_exceptions": LLM_EXPECTED_EXCEPTIONS,
        "ignore_exceptions": LLM_IGNORED_EXCEPTIONS,
    }
    return CircuitBreakerConfig(**(policy | fields))


DEFAULT_BREAKER_CONFIG = llm_breaker_config()


def _breaker(name: str, config: CircuitBreakerConfig | None, system: ActorSystem | None) -> Breaker:
    """The provider's breaker from the registry (the process-wide one unless ``system``).

    An existing breaker is reused as it is when no config is given; a new one gets ``config``
    or the LLM default.  A config that differs from an existing breaker's raises ValueError
    (the registry's conflict rule).
    """
    registry = system if system is not None else default_system()
    existing = registry.get(name)
    if config is None and existing is not None:
        return existing
    chosen = config if config is not None else DEFAULT_BREAKER_CONFIG
    if system is None:
        return get_circuit_breaker(name, chosen)
    return system.breaker(name, chosen)


def _release(sessions: SessionPool, facade: LoopThread) -> None:
    # Module-level so that the finalizer holds no reference to the client.
    facade.close()
    sessions.close_elsewhere()


class LLMClient:
    """Calls one provider, with an optional chain of fallback providers.  Use
    :func:`get_llm_client` to make one.

    Async methods are the source and sync methods mirror them (``complete`` /
    ``complete_async``, ``close`` / ``aclose``, ``reset_circuit_breaker`` /
    ``reset_circuit_breaker_async``, ...); sync calls run on a private loop thread and may be
    made from any thread that is not running an event loop.  Management methods act on the
    first provider's breaker and work anywhere.  ``stream_async`` has no sync twin.
    """

    def __init__(self, chain: Chain, *, fallback_text: str) -> None:
        self.chain = chain
        self._primary = chain.links[0]
        self.fallback_text = fallback_text
        self.sessions = SessionPool()
        self._facade = LoopThread(
            f"llm-client-{self._primary.name}", on_stop=self.sessions.release_current
        )
        self._finalizer = weakref.finalize(self, _release, self.sessions, self._facade)

    def __repr__(self) -> str:
        breaker = self._primary.breaker
        return (
            f"<LLMClient {self.provider!r} model={self.model!r} chain={self.providers} "
            f"breaker={breaker!r} sessions={len(self.sessions)}>"
        )

    @property
    def provider(self) -> str:
        """The first provider's name."""
        return self._primary.name

    @property
    def providers(self) -> list[str]:
        """The chain's provider names, first to last."""
        return [link.name for link in self.chain.links]

    @property
    def model(self) -> str | None:
        """The first provider's default model."""
        return self._primary.model

    @property
    def circuit_breaker(self) -> Breaker | None:
        """The first provider's breaker (None when breakers are disabled)."""
        return self._primary.breaker

    # -- calls -------------------------------------------------------------------------------

    def check(self, model: str | None) -> dict[Link, str]:
        """Check every provider of the chain can be called; the model each one sends (a
        model named in the call is the first provider's: the others use their own)."""
        models = {}
        for link in self.chain.links:
            link.provider.settings.check()
            models[link] = link.provider.settings.model_for(
                model if link is self._primary else None
            )
        return models

    async def complete_async(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        use_fallback: bool = True,
        timeout: float | None = None,
        **params: Any,
    ) -> LLMResponse:
        """One answer to ``messages`` (Chat Completions messages: ``system``, ``developer``,
        ``user``, ``assistant`` with ``tool_calls``, ``tool`` with ``tool_call_id``).

        ``model`` overrides the first provider's model; ``timeout`` (seconds for the whole
        answer) each provider's; ``params`` (``temperature``, ``tools``, ``tool_choice``,
        ``response_format``, ...) go into the request body of every provider tried: as they
        are for Chat Completions providers, translated for Anthropic (a parameter with no
        counterpart there raises :class:`InvalidRequestError` naming it).  Returns the answer
        (with ``tool_calls`` when the model called tools), or the fallback text as described
        in the module docstring.  Raises :class:`APIError` subclasses only (and
        ``RuntimeError`` once the client is closed).
        """
        request = build_request(messages, params, provider=self.provider)
        models = self.check(model)
        transport = self.sessions.get()

        async def attempt(link: Link) -> LLMResponse:
            return await link.provider.complete(transport, request, models[link], timeout)

        try:
            response, _ = await self.chain.call(attempt, DEFAULT_BREAKER_CONFIG)
        except CircuitOpenAPIError:
            if not use_fallback:
                raise
            return self._fallback(models)
        return response

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        use_fallback: bool = True,
        timeout: float | None = None,
        **params: Any,
    ) -> LLMResponse:
        """The sync mirror of :meth:`complete_async`: from any thread not running a loop
        (raises ``RuntimeError`` on one that is)."""
        call = self.complete_async(
            messages, model=model, use_fallback=use_fallback, timeout=timeout, **params
        )
        return self._facade.run(call, caller="complete")

    def stream_async(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        use_fallback: bool = True,
        timeout: float | None = None,
        **params: Any,
    ) -> LLMStream:
        """The answer as deltas: ``async for delta in client.stream_async(messages)``.

        Each delta is a text ``str`` or, when the model calls tools, a
        :class:`~service.llm.schema.ToolCallDelta` (Chat Completions order: index, id and
        name first, then argument fragments); ``stream.tool_calls`` has them assembled.
        Same arguments and chain as :meth:`complete_async`, except that ``timeout`` bounds
        each read rather than the whole stream.  Invalid messages and configuration problems
        raise here; everything else is raised from the iteration.  An open breaker rejects
        before any request; with the fallback text the stream yields it as one delta and
        ``stream.is_fallback`` is True.
        """
        request = build_request(messages, params, provider=self.provider)
        models = self.check(model)
        stream = LLMStream()
        stream._attach(self._stream(stream, request, models, use_fallback, timeout))
        return stream

    async def _stream(
        self,
        stream: LLMStream,
        request: ChatRequest,
        models: dict[Link, str],
        use_fallback: bool,
        timeout: float | None,
    ) -> AsyncGenerator[Delta, None]:
        transport = self.sessions.get()
        results: dict[Link, StreamResult] = {}

        def items(link: Link) -> AsyncGenerator[Delta, None]:
            result = results[link] = StreamResult()
            return link.provider.stream(transport, request, models[link], timeout, result)

        try:
            link, source, first = await self.chain.stream(items, DEFAULT_BREAKER_CONFIG)
        except CircuitOpenAPIError:
            if not use_fallback:
                raise
            response = self._fallback(models)
            result = StreamResult()
            result.model = response.model
            stream._answered_by(response.provider, result, fallback=True)
            yield response.content or ""
            stream._completed()
            return
        stream._answered_by(link.name, results[link], fallback=False)
        try:
            for delta in first:
                yield delta
            async for delta in source:
                yield delta
        finally:
            await source.aclose()
        stream._completed()

    def _fallback(self, models: dict[Link, str]) -> LLMResponse:
        logger.debug("no provider available; answering with the fallback text")
        return LLMResponse(
            content=self.fallback_text,
            model=models[self._primary],
            provider=self.provider,
            is_fallback=True,
        )

    def _metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics | self._primary.cooldown.snapshot()

    # -- management (the first provider's breaker; a no-op without one) ------------------------

    def get_circuit_breaker_metrics(self) -> dict[str, Any] | None:
        """The breaker's metrics as a dict (``state``, ``failure_rate``, counts, ...) with the
        provider's rate-limit cooldown (``cooldown_remaining``, ``rate_limited``,
        ``cooldown_skipped``), or None when breakers are disabled."""
        breaker = self._primary.breaker
        return self._metrics(breaker.get_metrics()) if breaker is not None else None

    async def get_circuit_breaker_metrics_async(self) -> dict[str, Any] | None:
        breaker = self._primary.breaker
        if breaker is None:
            return None
        return self._metrics(await breaker.get_metrics_async())

    def reset_circuit_breaker(self) -> None:
        """Back to CLOSED, counts cleared."""
        if self._primary.breaker is not None:
            self._primary.breaker.reset()

    async def reset_circuit_breaker_async(self) -> None:
        if self._primary.breaker is not None:
            await self._primary.breaker.reset_async()

    def force_circuit_open(self) -> None:
        """Hold the breaker OPEN (every call gets the fallback) until reset or force-closed."""
        if self._primary.breaker is not None:
            self._primary.breaker.force_open()

    async def force_circuit_open_async(self) -> None:
        if self._primary.breaker is not None:
            await self._primary.breaker.force_open_async()

    def force_circuit_closed(self) -> None:
        """Hold the breaker CLOSED (failures counted, never opening) until reset."""
        if self._primary.breaker is not None:
            self._primary.breaker.force_close()

    async def force_circuit_closed_async(self) -> None:
        if self._primary.breaker is not None:
            await self._primary.breaker.force_close_async()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    async def aclose(self) -> None:
        """Close the HTTP sessions and the sync facade's thread.  Later calls raise
        ``RuntimeError``.  Idempotent."""
        if not self._finalizer.alive:
            return
        await self.sessions.aclose()
        if self._facade.running:
            await anyio.to_thread.run_sync(self._facade.close)
        self._finalizer()

    def close(self) -> None:
        """The sync mirror of :meth:`aclose`; safe anywhere (it never waits for the loop it
        runs on: a session of that loop closes as soon as the loop gets control back)."""
        self._finalizer()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def get_llm_client(
    provider: str = "openai",
    enable_circuit_breaker: bool = True,
    *,
    fallback_providers: Sequence[str | Mapping[str, Any]] = (),
    fallback_text: str = DEFAULT_FALLBACK_TEXT,
    circuit_breaker_config: CircuitBreakerConfig | None = None,
    system: ActorSystem | None = None,
    max_connections: int = DEFAULT_POOL_SIZE,
    fallback_on_rate_limit: bool = True,
    **options: Any,
) -> LLMClient:
    """A new client for ``provider`` (``"openai"``, ``"anthropic"``, ``"openai_compatible"``).

    ``options`` are the provider's (see :class:`~service.llm.settings.ProviderOptions`:
    ``api_key``, ``api_key_env``, ``base_url``, ``model``, ``timeout``, ``connect_timeout``,
    ``max_tokens``, ``name``, ``pool_size``, ``pool_timeout``), read together with the
    environment now.
    ``fallback_providers`` lists the next providers to try, each a provider name (configured
    from the environment) or a mapping of the same options with a ``"provider"`` key.
    ``circuit_breaker_config`` applies to each provider's breaker when the registry first
    creates it (default: :data:`DEFAULT_BREAKER_CONFIG`; build others with
    :func:`llm_breaker_config`); ``system`` takes the breakers from that actor system instead
    of the process-wide registry.  ``max_connections`` is the ``pool_size`` of every provider
    that sets none (connections to it at once, per loop; see ``ProviderOptions``).
    ``fallback_on_rate_limit``: a 429 (or a provider cooling down after one) moves the call on
    to the next provider (default); False raises the ``RateLimitError`` at once.

    Raises ``ConfigurationError`` (a ``ValueError``) for an invalid option, naming it, and
    ``ValueError`` when an existing breaker has a different config.  A missing key is not
    raised here but at the first call (:class:`ProviderConfigurationError`).
    """
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise ConfigurationError(f"max_connections: expected int >= 1, got {max_connections!r}")
    if max_connections < 1:
        raise ConfigurationError(f"max_connections: expected int >= 1, got {max_connections!r}")
    if not isinstance(fallback_text, str):
        raise ConfigurationError(f"fallback_text: expected str, got {type(fallback_text).__name__}")
    if isinstance(fallback_providers, str | Mapping):
        raise ConfigurationError("fallback_providers: expected a list of providers")
    specs = [ProviderOptions.parse({"provider": provider, **options}, where="get_llm_client()")]
    for index, entry in enumerate(fallback_providers):
        where = f"fallback_providers[{index}]"
        if isinstance(entry, str):
            entry = {"provider": entry}
        elif not isinstance(entry, Mapping):
            raise ConfigurationError(
                f"{where}: expected a provider name or a mapping of options, "
                f"got {type(entry).__name__}"
            )
        specs.append(ProviderOptions.parse(entry, where=where))
    settings = [ProviderSettings.resolve(spec, pool_size=max_connections) for spec in specs]
    names = [item.name for item in settings]
    for index, name in enumerate(names[1:]):
        if name in names[: index + 1]:
            raise ConfigurationError(
                f"fallback_providers[{index}]: {name!r} is already in the chain; "
                "give it another name=..."
            )
    links = [
        _link(
            item,
            circuit_breaker_config if enable_circuit_breaker else None,
            system,
            guarded=enable_circuit_breaker,
        )
        for item in settings
    ]
    chain = Chain(links, fallback_on_rate_limit=fallback_on_rate_limit)
    return LLMClient(chain, fallback_text=fallback_text)


def _link(
    settings: ProviderSettings,
    config: CircuitBreakerConfig | None,
    system: ActorSystem | None,
    *,
    guarded: bool,
) -> Link:
    """A chain link for ``settings``: its provider, breaker (when ``guarded``) and cooldown."""
    name = f"{settings.name}_client"
    breaker = _breaker(name, config, system) if guarded else None
    registry = system if system is not None else default_system()
    slots = shared_slots(registry, settings.name, settings.pool_size)
    return Link(Provider(settings, slots), breaker, cooldown_for(registry, name), settings.model)
