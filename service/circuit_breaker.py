"""The public circuit-breaker API: facade, configuration, errors, registry, decorator.

Everything here is a thin layer over ``actors``: a :class:`CircuitBreaker` *is* the actor
layer's breaker handle (no extra frame on the hot path), registered by name in the default
actor system unless you give it a system of your own.
"""

from __future__ import annotations

from collections.abc import Callable
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
from actors.guard import guard, guarded_async
from actors.snapshot import CircuitBreakerMetrics
from actors.system import ActorSystem, default_system

F = TypeVar("F", bound=Callable[..., Any])

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

    A stream (an ``async def`` generator, or a function annotated to return an async
    iterator) is one call judged when its iteration ends, as with ``@breaker``: see
    :mod:`actors.guard`.
    """

    def decorate(fn: F) -> F:
        return guard(get_circuit_breaker(name or f"{fn.__module__}.{fn.__qualname__}", config), fn)

    return decorate
