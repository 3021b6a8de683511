"""The fallback chain: try each provider in order, through its breaker and its cooldown.

One runner for the library (``LLMClient``) and the gateway alike, so that breakers,
cooldowns, connection slots and fallbacks behave the same whichever door a request came in
by.  What an attempt *does* (a library call through a wire format, bytes forwarded by the
gateway, an embeddings call) is the caller's function; the chain only decides who is tried
and what a failure means.

For each provider (a :class:`Link`), in order:

1. Cooling down after a 429: skipped, not called (a :class:`RateLimitError` with the time left).
2. A connection slot is taken (``pool_size`` / ``pool_timeout``): saturation is ours, raised as
   :class:`ProviderSaturatedError` before the breaker is asked, so it is never its outcome.
3. The breaker admits the call or rejects it (:class:`CircuitOpenAPIError`).
4. The attempt runs; a 429 starts the provider's cooldown.

A failure passes the call on to the next provider when it is a rejection, a cooldown,
saturation, a rate limit (``fallback_on_rate_limit``, default true), or a failure the breaker
counts (5xx, timeouts, resets, malformed answers).  Anything else (an invalid request, a bad
key) is raised at once: another provider would not make it right.  When every provider was
tried, :meth:`Chain.exhausted` picks the error: every one unavailable (open or cooling) gives
the soonest time any of them will take a call again.

A stream commits to a provider with its first item; the breaker guards the whole stream.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

from actors.breaker import Breaker
from actors.errors import CallTimeoutError, CircuitBreakerOpenError
from service.circuit_breaker import CircuitBreakerConfig
from service.llm.cooldown import Cooldown
from service.llm.errors import (
    APIError,
    CircuitOpenAPIError,
    NetworkTimeoutError,
    ProviderSaturatedError,
    RateLimitError,
)
from service.llm.provider import Provider

logger = logging.getLogger("service.llm")

T = TypeVar("T")


#: The errors :meth:`Link._judged` turns into what the chain reports.
_JUDGED = (CircuitBreakerOpenError, CallTimeoutError, RateLimitError)


class Link:
    """One provider of a chain, with its breaker (None when breakers are disabled) and its
    cooldown.  ``model`` is the upstream model this link sends."""

    __slots__ = ("breaker", "cooldown", "model", "provider")

    def __init__(
        self, provider: Provider, breaker: Breaker | None, cooldown: Cooldown, model: str | None
    ) -> None:
        self.provider = provider
        self.breaker = breaker
        self.cooldown = cooldown
        self.model = model

    def __repr__(self) -> str:
        return f"<Link {self.name!r} breaker={self.breaker!r} {self.cooldown!r}>"

    @property
    def name(self) -> str:
        return self.provider.name

    def _cooling(self) -> RateLimitError | None:
        left = self.cooldown.remaining()
        if left <= 0.0:
            return None
        self.cooldown.skipped += 1
        return RateLimitError(
            f"cooling down after a rate limit; {left:.1f}s left (not called)",
            provider=self.name,
            retry_after=left,
        )

    def _cool(self, exc: RateLimitError) -> None:
        """Start the cooldown; a 429 that gave no hint gets the cooldown's length as its
        ``retry_after`` (what the caller should wait, as far as we know)."""
        left = self.cooldown.hit(exc.retry_after)
        if exc.retry_after is None:
            exc.retry_after = left

    def _judged(self, exc: Exception) -> NoReturn:
        """Raise what the chain makes of a call's error from the breaker or the provider
        (one of :data:`_JUDGED`): a rejection becomes the provider's open-circuit error, a
        call timeout a network timeout, and a rate limit starts the cooldown."""
        if isinstance(exc, CircuitBreakerOpenError):
            raise CircuitOpenAPIError.from_rejection(self.name, exc) from None
        if isinstance(exc, CallTimeoutError):
            raise NetworkTimeoutError(str(exc), provider=self.name) from exc
        assert isinstance(exc, RateLimitError)
        self._cool(exc)
        raise exc

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` as one call of this provider (see the module docstring)."""
        cooling = self._cooling()
        if cooling is not None:
            raise cooling
        breaker = self.breaker
        try:
            async with self.provider.slot():
                if breaker is None:
                    return await attempt()
                return await breaker.call_async(attempt)
        except _JUDGED as exc:
            self._judged(exc)

    async def stream(self, items: Callable[[], AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
        """The items of ``items()`` as one call of this provider, from the request to the end
        of the stream (admission before the first item; the outcome when it ends or breaks;
        an abandoned stream is ignored by the breaker)."""
        cooling = self._cooling()
        if cooling is not None:
            raise cooling
        breaker = self.breaker
        guard = breaker.guarded_async() if breaker is not None else contextlib.nullcontext()
        try:
            async with self.provider.slot(), guard, contextlib.aclosing(items()) as source:
                async for item in source:
                    yield item
        except _JUDGED as exc:
            self._judged(exc)


class Chain:
    """Links tried in order.  ``fallback_on_rate_limit``: whether a 429 (or a cooldown) moves
    the call on to the next provider (True) or is raised at once (False)."""

    __slots__ = ("fallback_on_rate_limit", "links")

    def __init__(self, links: Sequence[Link], *, fallback_on_rate_limit: bool = True) -> None:
        if not links:
            raise ValueError("a chain needs at least one provider")
        self.links = tuple(links)
        self.fallback_on_rate_limit = fallback_on_rate_limit

    def __repr__(self) -> str:
        return f"<Chain {[link.name for link in self.links]}>"

    def passes_on(self, link: Link, error: APIError, policy: CircuitBreakerConfig) -> bool:
        """Whether ``error`` from ``link`` hands the call to the next provider."""
        if isinstance(error, CircuitOpenAPIError | ProviderSaturatedError):
            return True
        if isinstance(error, RateLimitError):
            return self.fallback_on_rate_limit
        config = link.breaker.config if link.breaker is not None else policy
        return config.counts_as_failure(error)

    async def call(
        self,
        attempt: Callable[[Link], Awaitable[T]],
        policy: CircuitBreakerConfig,
        links: Sequence[Link] | None = None,
    ) -> tuple[T, Link]:
        """The first answer of ``attempt(link)`` along the chain, and the link that gave it.

        ``policy`` judges failures where a link has no breaker; ``links`` narrows the chain
        (e.g. to the providers that serve embeddings).  Raises :meth:`exhausted`'s error when
        nobody answered, or a failure that does not pass on.
        """
        failures: list[APIError] = []
        for link in self.links if links is None else links:
            try:
                return await link.call(lambda: attempt(link)), link  # noqa: B023 (awaited here)
            except APIError as exc:
                if not self.passes_on(link, exc, policy):
                    raise
                failures.append(exc)
                logger.debug("%s did not answer: %r", link.name, exc)
        raise self.exhausted(failures)

    async def stream(
        self,
        items: Callable[[Link], AsyncGenerator[T, None]],
        policy: CircuitBreakerConfig,
    ) -> tuple[Link, AsyncGenerator[T, None], list[T]]:
        """Open a stream along the chain: the link that serves it, its item generator (the
        caller closes it) and the items already read (the first one, or none for a complete
        stream that had none).  Errors as for :meth:`call`, up to the first item."""
        failures: list[APIError] = []
        for link in self.links:
            source = link.stream(lambda: items(link))  # noqa: B023 (called at once)
            try:
                first = [await anext(source)]
            except StopAsyncIteration:
                first = []
            except APIError as exc:
                await source.aclose()
                if not self.passes_on(link, exc, policy):
                    raise
                failures.append(exc)
                logger.debug("%s did not stream: %r", link.name, exc)
                continue
            except BaseException:
                await source.aclose()
                raise
            return link, source, first
        raise self.exhausted(failures)

    def exhausted(self, failures: list[APIError]) -> APIError:
        """The error for a call that every provider passed on.

        When each failure is an unavailability (an open breaker, a rate limit or a cooldown),
        the error says when the soonest provider will take a call: a
        :class:`RateLimitError` when any of them is rate limited (the route is throttled, not
        broken: come back then), a :class:`CircuitOpenAPIError` when all are open, each with
        that ``retry_after``.  Otherwise the last failure, with the earlier ones as notes.
        """
        last = failures[-1]
        if len(failures) == 1:
            return last
        error = last
        waits = [_wait(failure) for failure in failures]
        if all(wait is not None for wait in waits):
            soonest = min(wait for wait in waits if wait is not None)
            limited = [f for f in failures if isinstance(f, RateLimitError)]
            if limited:  # throttled, not broken: the client should come back, not give up
                error = RateLimitError(
                    f"every provider is rate limited or unavailable; the soonest takes calls "
                    f"in {soonest:.1f}s",
                    provider=min(failures, key=_sort_wait).provider,
                    status=limited[-1].status,
                    retry_after=soonest,
                )
            else:
                first = min(failures, key=_sort_wait)
                assert isinstance(first, CircuitOpenAPIError)
                error = CircuitOpenAPIError(
                    provider=first.provider,
                    breaker_name=first.breaker_name,
                    state=first.state,
                    retry_after=soonest,
                )
        for failure in failures:
            if failure is not error:
                error.add_note(f"tried: {failure!r}")
        return error


def _wait(failure: APIError) -> float | None:
    """How long until the provider behind ``failure`` takes calls, for an unavailability."""
    if isinstance(failure, CircuitOpenAPIError):
        return failure.retry_after
    if isinstance(failure, RateLimitError):
        return failure.retry_after if failure.retry_after is not None else 0.0
    return None


def _sort_wait(failure: APIError) -> float:
    wait = _wait(failure)
    return wait if wait is not None else float("inf")
