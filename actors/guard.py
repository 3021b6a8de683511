"""Guarding a function with a breaker: ``@breaker`` and ``@circuit_breaker`` both come here.

A plain call is one guarded call.  A *stream* is one call too, judged when its iteration ends:
an ``async def`` generator, or a function (sync or async) whose return annotation is an
``AsyncIterator`` / ``AsyncIterable`` / ``AsyncGenerator``, is run through
:func:`guarded_async`, so that an exception raised mid-iteration counts as a failure.  Such a
function then runs at the first ``__anext__``, not when it is called (that is when the breaker
admits it).  A function that returns an async iterator without saying so in its annotation
raises ``TypeError`` when called: the breaker would otherwise have judged the creation of the
iterator, not the iteration, and counted a broken stream as a success (one ``hasattr`` per
call tells).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # breaker.py imports this module: the name is for the type hints only
    from actors.breaker import Breaker

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_STREAM_TYPES = frozenset({"AsyncIterator", "AsyncIterable", "AsyncGenerator"})


def guard(breaker: Breaker, fn: F) -> F:
    """Wrap ``fn`` (sync, async, or a stream as above) so that every call goes through
    ``breaker``.  The wrapper keeps ``fn``'s name and docstring and exposes the breaker as
    ``wrapper.circuit_breaker``."""
    if inspect.isasyncgenfunction(fn) or _declares_async_iterator(fn):
        wrapper = _guard_stream(breaker, fn)
    else:
        wrapper = _guard_call(breaker, fn)
    functools.update_wrapper(wrapper, fn)
    wrapper.circuit_breaker = breaker
    return cast(F, wrapper)


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


def _guard_call(breaker: Breaker, fn: Callable[..., Any]) -> Any:
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

    return wrapper


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

    return wrapper


def _as_iterable(stream: Any) -> AsyncIterable[Any]:
    if not isinstance(stream, collections.abc.AsyncIterable):
        raise TypeError(f"expected an async iterable, got {type(stream).__name__}")
    return stream


def _stream_misuse(fn: Callable[..., Any]) -> TypeError:
    return TypeError(
        f"{fn.__qualname__} returned an async iterator, but the breaker judged only its "
        "creation, not the iteration: make it an `async def` generator, annotate its return "
        "type as AsyncIterator[...], or iterate `guarded_async(breaker, stream)` instead"
    )


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
