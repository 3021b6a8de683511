"""The LLM client: per-provider breakers, a fallback chain, fallback text, a sync facade.

How a call goes (``complete_async`` and ``stream_async`` alike):

1. The messages are validated and every provider in the chain is checked for a key, a base
   URL and a model, before anything is sent (a configuration mistake is loud and immediate).
2. Each provider is tried in order, through its own breaker (``<name>_client`` in the
   registry, shared by every client of that provider).  A rejection by an open breaker, or a
   failure the breaker counts (5xx, timeouts, resets, malformed answers), passes the call to
   the next provider.  Any other error (rate limit, invalid request, bad key) is raised at
   once: another provider would not make it right, and hiding it would hide the caller's bug.
3. When no provider answered, the last provider's outcome decides: its error is raised (with
   the earlier ones as notes), and if its breaker rejected the call the answer is the fallback
   text (``is_fallback=True``), or :class:`CircuitOpenAPIError` with ``use_fallback=False``.
   With one provider this is exactly the seed's behaviour: an open breaker gives the fallback
   text, a failure that has not opened it yet is raised.

A stream commits to a provider when its first delta arrives: before that, the chain applies
as above; after it, a failure is raised from the iteration (and counted by that provider's
breaker, which guards the whole stream, from the request to the end marker).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
import anyio.to_thread

from actors.breaker import Breaker
from actors.errors import CallTimeoutError, CircuitBreakerOpenError, ConfigurationError
from actors.system import ActorSystem, default_system
from service.circuit_breaker import CircuitBreakerConfig, get_circuit_breaker
from service.llm.errors import (
    APIError,
    AuthenticationError,
    CircuitOpenAPIError,
    InvalidRequestError,
    NetworkTimeoutError,
    ProviderConfigurationError,
    RateLimitError,
    ServiceUnavailableError,
)
from service.llm.facade import LoopThread
from service.llm.provider import Provider
from service.llm.schema import ChatRequest, LLMResponse, StreamResult, build_request
from service.llm.sessions import SessionPool
from service.llm.settings import ProviderOptions, ProviderSettings
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
#: the errors module for why a bad key is not the provider's fault).
LLM_IGNORED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    RateLimitError,
    InvalidRequestError,
    AuthenticationError,
    ProviderConfigurationError,
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


class _Route:
    """One provider of the chain and its breaker (None when breakers are disabled)."""

    __slots__ = ("breaker", "provider")

    def __init__(self, provider: Provider, breaker: Breaker | None) -> None:
        self.provider = provider
        self.breaker = breaker

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def settings(self) -> ProviderSettings:
        return self.provider.settings

    def passes_on(self, error: APIError) -> bool:
        """Whether ``error`` hands the call to the next provider: a rejection, or a failure
        this provider's breaker counts (the default policy when breakers are disabled)."""
        if isinstance(error, CircuitOpenAPIError):
            return True
        config = self.breaker.config if self.breaker is not None else DEFAULT_BREAKER_CONFIG
        return config.counts_as_failure(error)

    async def complete(
        self,
        session: aiohttp.ClientSession,
        request: ChatRequest,
        model: str,
        timeout: float | None,
    ) -> LLMResponse:
        provider, breaker = self.provider, self.breaker
        if breaker is None:
            return await provider.complete(session, request, model, timeout)
        try:
            return await breaker.call_async(provider.complete, session, request, model, timeout)
        except CircuitBreakerOpenError as exc:
            raise CircuitOpenAPIError.from_rejection(provider.name, exc) from None
        except CallTimeoutError as exc:
            raise NetworkTimeoutError(str(exc), provider=provider.name) from exc

    async def stream(
        self,
        session: aiohttp.ClientSession,
        request: ChatRequest,
        model: str,
        timeout: float | None,
        into: StreamResult,
    ) -> AsyncGenerator[str, None]:
        provider, breaker = self.provider, self.breaker
        deltas = provider.stream(session, request, model, timeout, into)
        if breaker is None:
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    yield delta
            return
        try:
            # Admission before the request; the outcome when the stream ends or breaks.
            async with breaker.guarded_async(), contextlib.aclosing(deltas):
                async for delta in deltas:
                    yield delta
        except CircuitBreakerOpenError as exc:
            raise CircuitOpenAPIError.from_rejection(provider.name, exc) from None
        except CallTimeoutError as exc:
            raise NetworkTimeoutError(str(exc), provider=provider.name) from exc


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

    def __init__(
        self,
        routes: Sequence[_Route],
        *,
        fallback_text: str,
        max_connections: int,
    ) -> None:
        if not routes:
            raise ValueError("an LLM client needs at least one provider")
        self._routes = tuple(routes)
        self._primary = self._routes[0]
        self.fallback_text = fallback_text
        self._sessions = SessionPool(max_connections)
        self._facade = LoopThread(
            f"llm-client-{self._primary.name}", on_stop=self._sessions.release_current
        )
        self._finalizer = weakref.finalize(self, _release, self._sessions, self._facade)

    def __repr__(self) -> str:
        breaker = self._primary.breaker
        chain = [route.name for route in self._routes]
        return (
            f"<LLMClient {self.provider!r} model={self.model!r} chain={chain} "
            f"breaker={breaker!r} sessions={len(self._sessions)}>"
        )

    @property
    def provider(self) -> str:
        """The first provider's name."""
        return self._primary.name

    @property
    def providers(self) -> list[str]:
        """The chain's provider names, first to last."""
        return [route.name for route in self._routes]

    @property
    def model(self) -> str | None:
        """The first provider's default model."""
        return self._primary.settings.model

    @property
    def circuit_breaker(self) -> Breaker | None:
        """The first provider's breaker (None when breakers are disabled)."""
        return self._primary.breaker

    # -- calls -------------------------------------------------------------------------------

    def _prepare(
        self, messages: Sequence[Mapping[str, Any]], model: str | None, params: Mapping[str, Any]
    ) -> tuple[ChatRequest, list[str]]:
        request = build_request(messages, params, provider=self.provider)
        models = []
        for index, route in enumerate(self._routes):
            route.settings.check()
            # A model named in the call is the first provider's: other providers use their own.
            models.append(route.settings.model_for(model if index == 0 else None))
        return request, models

    async def complete_async(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        use_fallback: bool = True,
        timeout: float | None = None,
        **params: Any,
    ) -> LLMResponse:
        """One answer to ``messages`` (``[{"role": ..., "content": ...}, ...]``).

        ``model`` overrides the first provider's model; ``timeout`` (seconds for the whole
        answer) each provider's; ``params`` (``temperature``, ``max_tokens``, ...) go into the
        request body of every provider tried.  Returns the answer, or the fallback text as
        described in the module docstring.  Raises :class:`APIError` subclasses only (and
        ``RuntimeError`` once the client is closed).
        """
        request, models = self._prepare(messages, model, params)
        session = self._sessions.get()
        failures: list[APIError] = []
        for route, chosen in zip(self._routes, models, strict=True):
            try:
                return await route.complete(session, request, chosen, timeout)
            except APIError as exc:
                if not route.passes_on(exc):
                    raise
                failures.append(exc)
                logger.debug("%s did not answer: %r", route.name, exc)
        return self._no_answer(failures, use_fallback, models[0])

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
        """The answer as text deltas: ``async for delta in client.stream_async(messages)``.

        Same arguments and chain as :meth:`complete_async`, except that ``timeout`` bounds
        each read rather than the whole stream.  Invalid messages and configuration problems
        raise here; everything else is raised from the iteration.  An open breaker rejects
        before any request; with the fallback text the stream yields it as one delta and
        ``stream.is_fallback`` is True.
        """
        request, models = self._prepare(messages, model, params)
        stream = LLMStream()
        stream._attach(self._stream(stream, request, models, use_fallback, timeout))
        return stream

    async def _stream(
        self,
        stream: LLMStream,
        request: ChatRequest,
        models: list[str],
        use_fallback: bool,
        timeout: float | None,
    ) -> AsyncGenerator[str, None]:
        session = self._sessions.get()
        failures: list[APIError] = []
        for route, chosen in zip(self._routes, models, strict=True):
            result = StreamResult()
            deltas = route.stream(session, request, chosen, timeout, result)
            async with contextlib.aclosing(deltas):
                try:
                    first = await anext(deltas)
                except StopAsyncIteration:  # a complete answer with no text
                    stream._answered_by(route.name, result, fallback=False)
                    stream._completed()
                    return
                except APIError as exc:
                    if not route.passes_on(exc):
                        raise
                    failures.append(exc)
                    logger.debug("%s did not stream: %r", route.name, exc)
                    continue
                stream._answered_by(route.name, result, fallback=False)
                yield first
                async for delta in deltas:
                    yield delta
            stream._completed()
            return
        response = self._no_answer(failures, use_fallback, models[0])
        result = StreamResult()
        result.model = response.model
        stream._answered_by(response.provider, result, fallback=True)
        yield response.content
        stream._completed()

    def _no_answer(self, failures: list[APIError], use_fallback: bool, model: str) -> LLMResponse:
        """No provider answered: the fallback text, or the last failure raised."""
        last = failures[-1]
        if use_fallback and isinstance(last, CircuitOpenAPIError):
            logger.debug("no provider available; answering with the fallback text")
            return LLMResponse(
                content=self.fallback_text, model=model, provider=self.provider, is_fallback=True
            )
        for earlier in failures[:-1]:
            last.add_note(f"tried before: {earlier!r}")
        raise last

    # -- management (the first provider's breaker; a no-op without one) ------------------------

    def get_circuit_breaker_metrics(self) -> dict[str, Any] | None:
        """The breaker's metrics as a dict (``state``, ``failure_rate``, counts, ...), or None
        when breakers are disabled."""
        breaker = self._primary.breaker
        return breaker.get_metrics() if breaker is not None else None

    async def get_circuit_breaker_metrics_async(self) -> dict[str, Any] | None:
        breaker = self._primary.breaker
        return await breaker.get_metrics_async() if breaker is not None else None

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
        await self._sessions.aclose()
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
    max_connections: int = 16,
    **options: Any,
) -> LLMClient:
    """A new client for ``provider`` (``"openai"``, ``"anthropic"``, ``"openai_compatible"``).

    ``options`` are the provider's (see :class:`~service.llm.settings.ProviderOptions`:
    ``api_key``, ``api_key_env``, ``base_url``, ``model``, ``timeout``, ``connect_timeout``,
    ``max_tokens``, ``name``), read together with the environment now.
    ``fallback_providers`` lists the next providers to try, each a provider name (configured
    from the environment) or a mapping of the same options with a ``"provider"`` key.
    ``circuit_breaker_config`` applies to each provider's breaker when the registry first
    creates it (default: :data:`DEFAULT_BREAKER_CONFIG`; build others with
    :func:`llm_breaker_config`); ``system`` takes the breakers from that actor system instead
    of the process-wide registry.  ``max_connections`` bounds the connection pool per loop.

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
    settings = [ProviderSettings.resolve(spec) for spec in specs]
    names = [item.name for item in settings]
    for index, name in enumerate(names[1:]):
        if name in names[: index + 1]:
            raise ConfigurationError(
                f"fallback_providers[{index}]: {name!r} is already in the chain; "
                "give it another name=..."
            )
    routes = [
        _Route(
            Provider(item),
            _breaker(f"{item.name}_client", circuit_breaker_config, system)
            if enable_circuit_breaker
            else None,
        )
        for item in settings
    ]
    return LLMClient(routes, fallback_text=fallback_text, max_connections=max_connections)
