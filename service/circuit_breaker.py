"""The public circuit-breaker API: facade, configuration, errors, registry, decorator.

Everything here is a thin layer over ``actors``: a :class:`CircuitBreaker` *is* the actor
layer's breaker handle (no extra frame on the hot path), registered by name in the default
actor system unless you give it a system of your own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from actors.breaker import Breaker, guard
from actors.bus import EventBus
from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import CircuitBreakerOpenError
from actors.snapshot import CircuitBreakerMetrics
from actors.system import ActorSystem, default_system

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "ActorSystem",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerMetrics",
    "CircuitBreakerOpenError",
    "CircuitState",
    "circuit_breaker",
    "get_all_circuit_breakers",
    "get_circuit_breaker",
    "get_event_bus",
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
    (default: the function's qualified name)."""

    def decorate(fn: F) -> F:
        breaker = get_circuit_breaker(name or f"{fn.__module__}.{fn.__qualname__}", config)
        return guard(breaker, fn)

    return decorate
