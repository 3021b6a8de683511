"""breakerd's actor layer: the runtime, the event bus and the breaker actor.

Imports only the standard library, anyio and msgspec; ``service`` and ``telemetry`` build on it.
"""

from actors.breaker import Breaker, BreakerActor, Gate
from actors.bus import ALL_EVENTS, EventBus, Subscription
from actors.clock import Clock, ManualClock, MonotonicClock
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
from actors.events import BreakerRemoved, CallsRecorded, ConfigChanged, Event, StateChanged
from actors.guard import guard, guarded_async
from actors.runtime import Actor, Runtime
from actors.snapshot import CircuitBreakerMetrics
from actors.system import ActorSystem, default_system

__all__ = [
    "ALL_EVENTS",
    "Actor",
    "ActorCrashedError",
    "ActorSystem",
    "ActorSystemClosedError",
    "Breaker",
    "BreakerActor",
    "BreakerError",
    "BreakerRemoved",
    "BreakerRemovedError",
    "CallTimeoutError",
    "CallsRecorded",
    "CircuitBreakerConfig",
    "CircuitBreakerMetrics",
    "CircuitBreakerOpenError",
    "CircuitState",
    "Clock",
    "ConfigChanged",
    "ConfigurationError",
    "Event",
    "EventBus",
    "Gate",
    "ManualClock",
    "MonotonicClock",
    "Runtime",
    "StateChanged",
    "Subscription",
    "default_system",
    "guard",
    "guarded_async",
]
