"""The breaker's configuration and states: validated once, at construction.

``CircuitBreakerConfig`` is a frozen msgspec Struct.  Constructing one with a bad value raises
:class:`~actors.errors.ConfigurationError` (a ``ValueError``) naming the field, so that a
mistake surfaces where it is made rather than at the first failure in production.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import msgspec

from actors.errors import ConfigurationError


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name}: expected int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name}: expected int >= {minimum}, got {value!r}")


def _check_duration(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name}: expected a number of seconds > 0, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name}: expected a number of seconds > 0, got {value!r}")


def _check_exception_types(name: str, value: Any) -> None:
    if not isinstance(value, tuple):
        raise ConfigurationError(
            f"{name}: expected a tuple of exception classes, got {type(value).__name__}"
        )
    for index, item in enumerate(value):
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(f"{name}[{index}]: expected an exception class, got {item!r}")


class CircuitBreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a breaker trips, how long it stays open and how it recovers.

    - ``failure_threshold``: consecutive failures in CLOSED that open the breaker.
    - ``success_threshold``: successful probes in HALF_OPEN that close it again.
    - ``timeout_duration``: seconds OPEN before the breaker lets probes through (HALF_OPEN).
    - ``reset_timeout``: seconds without a failure after which the consecutive count restarts.
    - ``monitoring_window``: seconds over which ``failure_rate`` is computed.
    - ``half_open_max_calls``: probes allowed in flight at once in HALF_OPEN.
    - ``expected_exceptions``: exceptions that count as failures...
    - ``ignore_exceptions``: ...unless they are also one of these (e.g. rate limits).
      Any other exception propagates unchanged and counts as ``ignored``.
    """

    failure_threshold: int = 5
    success_threshold: int = 3
    timeout_duration: float = 60.0
    reset_timeout: float = 300.0
    monitoring_window: float = 60.0
    half_open_max_calls: int = 3
    expected_exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignore_exceptions: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        _check_int("failure_threshold", self.failure_threshold, 1)
        _check_int("success_threshold", self.success_threshold, 1)
        _check_int("half_open_max_calls", self.half_open_max_calls, 1)
        _check_duration("timeout_duration", self.timeout_duration)
        _check_duration("reset_timeout", self.reset_timeout)
        _check_duration("monitoring_window", self.monitoring_window)
        _check_exception_types("expected_exceptions", self.expected_exceptions)
        _check_exception_types("ignore_exceptions", self.ignore_exceptions)

    def is_failure(self, exc: BaseException) -> bool:
        """True when ``exc`` counts against the breaker; False means it is ``ignored``."""
        return isinstance(exc, self.expected_exceptions) and not isinstance(
            exc, self.ignore_exceptions
        )


DEFAULT_CONFIG = CircuitBreakerConfig()
