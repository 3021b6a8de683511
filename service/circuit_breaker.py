"""The public circuit-breaker API: facade, configuration, errors, registry, decorator.

Everything here is a thin layer over ``actors``: a :class:`CircuitBreaker` *is* the actor
layer's breaker handle (no extra frame on the hot path), registered by name in the default
actor system unless you give it a system of your own.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeVar

from actors.breaker import Breaker
from actors.bus import EventBus
from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import (
    ActorCrashedError,
    ActorSystemClosedError,
    BreakerError,
    BreakerRemovedError,
    CallTimeoutError,
    CircuitBreakerOpenError,
    ConfigurationError,
)
from actors.snapshot import CircuitBreakerMetrics
from actors.system import ActorSystem, default_system

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

__all__ = [
    "ActorCrashedError",
    "ActorSystem",
    "ActorSystemClosedError",
    "BreakerError",
    "BreakerRemovedError",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerMetrics",
    "CircuitBreakerOpenError",
    "CircuitState",
    "ConfigurationError",
    "circuit_breaker",
    "get_all_circuit_breakers",
    "get_circuit_breaker",
    "get_event_bus",
    "guarded_async",
    "remove_circuit_breaker",
]


class CircuitBreaker(Breaker):
    """A circuit breaker.  ``CircuitBreaker(config, name)`` creates a new, unregistered one.

    Use :func:`get_circuit_breaker` for the shared, named one (same name, same breaker).
    ``system`` runs it on an :class:`ActorSystem` of yours (e.g. inside your own event loop);
    by default it runs on the process-wide system.
    """

    __slots__ = ()
    _display_name = "CircuitBreaker"

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        name: str = "default",
        *,
        system: ActorSystem | None = None,
    ) -> None:
        if config is not None and not isinstance(config, CircuitBreakerConfig):
            raise TypeError(f"config: expected CircuitBreakerConfig, got {type(config).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        owner = system if system is not None else default_system()
        template = owner.create_breaker(name, config)
        super().__init__(template._actor)


def get_circuit_breaker(name: str, config: CircuitBreakerConfig | None = None) -> CircuitBreaker:
    """The process-wide breaker called ``name``, created with ``config`` on first use.

    Raises ``ValueError`` when ``name`` exists with a different config (rather than silently
    ignoring the new one).
    """
    breaker = default_system().breaker(name, config, cls=_Registered)
    assert isinstance(breaker, CircuitBreaker)
    return breaker


def get_all_circuit_breakers() -> dict[str, CircuitBreaker]:
    """Every breaker registered by name in the process-wide registry."""
    return {
        name: breaker
        for name, breaker in default_system().breakers().items()
        if isinstance(breaker, CircuitBreaker)
    }


def remove_circuit_breaker(name: str) -> bool:
    """Remove the process-wide breaker called ``name``; False if there is none.

    Its pending outcomes are counted, health and telemetry forget it, and a handle still held
    raises :class:`~actors.errors.BreakerRemovedError` on its next use (see
    ``ActorSystem.remove_breaker``); ``get_circuit_breaker(name)`` then makes a new one.
    """
    return default_system().remove_breaker(name)


def get_event_bus() -> EventBus:
    """The event bus of the process-wide system (subscribe here to see every breaker)."""
    return default_system().bus


class _Registered(CircuitBreaker):
    """A registry entry: built around an actor the system made (no second actor)."""

    __slots__ = ()

    def __init__(self, actor: Any) -> None:  # called by ActorSystem._create
        Breaker.__init__(self, actor)


def circuit_breaker(
    config: CircuitBreakerConfig | None = None, name: str | None = None
) -> Callable[[F], F]:
    """Decorator factory: guard a sync or async function with the registry's breaker ``name``
    (default: the function's qualified name).

    A stream is one call, judged when its iteration ends: an ``async def`` generator, or a
    function (sync or async) whose return annotation is an ``AsyncIterator`` /
    ``AsyncIterable`` / ``AsyncGenerator``, is run through :func:`guarded_async`, so that an
    exception raised mid-iteration counts as a failure.  Such a function then runs at the
    first ``__anext__``, not when it is called (that is when the breaker admits it).  A
    function that returns an async iterator without saying so in its annotation raises
    ``TypeError`` when called: the breaker would otherwise have judged the creation of the
    iterator, not the iteration, and counted a broken stream as a success.
    """

    def decorate(fn: F) -> F:
        breaker = get_circuit_breaker(name or f"{fn.__module__}.{fn.__qualname__}", config)
        if inspect.isasyncgenfunction(fn) or _declares_async_iterator(fn):
            return typing.cast(F, _guard_stream(breaker, fn))
        return _guard_call(breaker, fn)

    return decorate


async def guarded_async(breaker: Breaker, stream: AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate ``stream`` as one call under ``breaker`` (``Breaker.guarded_async()`` around
    the whole iteration).

    The call is admitted at the first ``__anext__`` (``CircuitBreakerOpenError`` then, before
    ``stream`` is touched) and judged when the iteration ends: a success when ``stream`` is
    exhausted, a failure (or an ignored outcome, by the breaker's rules) when it raises.  A
    consumer that stops early (``aclose()``, ``break`` then garbage collection) abandons the
    call, which counts as ignored, and closes ``stream``.
    """
    async with breaker.guarded_async():
        iterator = aiter(stream)
        try:
            async for item in iterator:
                yield item
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()


def _guard_stream(breaker: Breaker, fn: Callable[..., Any]) -> Any:
    """The wrapper of a stream function: it returns (or, for a coroutine function, resolves
    to) :func:`guarded_async` over the stream that ``fn`` makes once admitted."""

    async def opened(args: Any, kwargs: Any) -> AsyncIterator[Any]:
        made = fn(*args, **kwargs)
        stream = await made if inspect.isawaitable(made) else made
        async for item in _as_iterable(stream):
            yield item

    wrapper: Any
    if inspect.iscoroutinefunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return guarded_async(breaker, opened(args, kwargs))

    else:

        def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return guarded_async(breaker, opened(args, kwargs))

    functools.update_wrapper(wrapper, fn)
    wrapper.circuit_breaker = breaker
    return wrapper


def _as_iterable(stream: Any) -> AsyncIterable[Any]:
    if not isinstance(stream, collections.abc.AsyncIterable):
        raise TypeError(f"expected an async iterable, got {type(stream).__name__}")
    return stream


def _guard_call(breaker: Breaker, fn: F) -> F:
    """What :func:`actors.breaker.guard` does, plus a check that ``fn`` did not return an
    async iterator the breaker cannot see the end of (one ``hasattr`` per call)."""
    wrapper: Any
    if inspect.iscoroutinefunction(fn):
        call_async = breaker.call_async

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await call_async(fn, *args, **kwargs)
            if hasattr(result, "__anext__"):
                raise _stream_misuse(fn)
            return result

    else:
        call = breaker.call

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = call(fn, *args, **kwargs)
            if hasattr(result, "__anext__"):
                raise _stream_misuse(fn)
            return result

    functools.update_wrapper(wrapper, fn)
    wrapper.circuit_breaker = breaker
    return typing.cast(F, wrapper)


def _stream_misuse(fn: Callable[..., Any]) -> TypeError:
    return TypeError(
        f"{fn.__qualname__} returned an async iterator, but @circuit_breaker judged only its "
        "creation, not the iteration: make it an `async def` generator, annotate its return "
        "type as AsyncIterator[...], or iterate `guarded_async(breaker, stream)` instead"
    )


_STREAM_TYPES = frozenset({"AsyncIterator", "AsyncIterable", "AsyncGenerator"})


def _declares_async_iterator(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s return annotation is an async iterator or iterable type."""
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:  # names that do not resolve at decoration time: read the string
        hint = getattr(fn, "__annotations__", {}).get("return")
    if isinstance(hint, str):
        return hint.split("[", 1)[0].rsplit(".", 1)[-1].strip() in _STREAM_TYPES
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, collections.abc.AsyncIterable)
