"""Every error the actor layer raises, one class per condition.

Errors carry data (breaker name, state, ``retry_after``) so that callers and the HTTP layer
can act on them without parsing messages.
"""

from __future__ import annotations

import math
from typing import Any


class BreakerError(Exception):
    """Base class for errors raised by breakerd itself (never for the guarded call's own)."""


class CircuitBreakerOpenError(BreakerError):
    """Raised instead of running the guarded function.

    Raised when the breaker is OPEN (the function's dependency is considered down) or when it is
    HALF_OPEN and all of its probe slots are taken.  ``retry_after`` is the number of seconds
    until the breaker will next admit a probe: the rest of the break while OPEN, ``0.0`` in
    HALF_OPEN when only the probe slots are full, and ``math.inf`` while forced open (no probe
    comes until someone resets or force-closes the breaker).

    Constructed as ``CircuitBreakerOpenError(breaker_name, state, retry_after)``; the three are
    read-only properties over ``args`` rather than attributes set in an ``__init__``, and the
    message is formatted only when asked for: rejections are a hot path, and a Python-level
    ``__init__`` would cost more than the rest of a rejection.  Subclasses that take other
    arguments pass these three on to ``CircuitBreakerOpenError.__init__``.
    """

    args: tuple[str, Any, float]

    @property
    def breaker_name(self) -> str:
        return self.args[0]

    @property
    def state(self) -> Any:
        return self.args[1]

    @property
    def retry_after(self) -> float:
        return self.args[2]

    def __str__(self) -> str:
        state = getattr(self.state, "value", self.state)
        if math.isinf(self.retry_after):
            when = "it is forced open until reset or force_close()"
        else:
            when = f"retry after {self.retry_after:.3f}s"
        return f"circuit breaker {self.breaker_name!r} is {state}; call not attempted ({when})"


class CallTimeoutError(BreakerError, TimeoutError):
    """Raised when a guarded call ran longer than the breaker's ``call_timeout``.

    An async call is cancelled at the deadline; a sync call cannot be interrupted, so it raises
    this once it returns late (its result is discarded).  Either way it counts as a failure.
    """

    def __init__(self, breaker_name: str, timeout: float) -> None:
        super().__init__(breaker_name, timeout)
        self.breaker_name = breaker_name
        self.timeout = timeout

    def __str__(self) -> str:
        return f"call guarded by {self.breaker_name!r} exceeded its {self.timeout:g}s call_timeout"


class ActorSystemClosedError(BreakerError):
    """Raised when a breaker is used after the actor system that runs it has shut down.

    Only systems you start yourself (``async with ActorSystem()``) close; the registry's default
    system lives as long as the process.
    """


class BreakerRemovedError(BreakerError):
    """Raised when a handle is used after its breaker was removed from its system.

    ``ActorSystem.remove_breaker`` (or eviction) retires the breaker: asking the system for the
    same name again gives a new, independent breaker, and a handle to the old one raises this
    on its next call or management request instead of guarding calls with a breaker that
    nothing monitors any more.  Outcomes of calls already running when it was removed are
    dropped quietly (the call's own result or exception still reaches its caller).
    """

    def __init__(self, breaker_name: str) -> None:
        super().__init__(breaker_name)

    @property
    def breaker_name(self) -> str:
        return str(self.args[0])

    def __str__(self) -> str:
        return (
            f"circuit breaker {self.breaker_name!r} was removed; get a new one by name "
            "(it starts afresh)"
        )


class ActorCrashedError(BreakerError):
    """Raised to a caller whose request made an actor's handler fail.

    The actor logs the failure and goes on with its state intact (see ``actors.runtime``); the
    caller gets this error instead of waiting forever.  ``__cause__`` is the handler's exception.
    """


class ConfigurationError(ValueError):
    """A configuration value is invalid; the message names the field and the reason."""
