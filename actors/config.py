"""The breaker's configuration and states: validated once, at construction.

``CircuitBreakerConfig`` is a frozen msgspec Struct.  Constructing one with a bad value raises
:class:`~actors.errors.ConfigurationError` (a ``ValueError``) naming the field, so that a
mistake surfaces where it is made rather than at the first failure in production.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
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


def _check_optional_duration(name: str, value: Any) -> None:
    if value is not None:
        _check_duration(name, value)


def _check_ratio(name: str, value: Any, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigurationError(f"{name}: expected a number in (0, 1], got {value!r}")


def _check_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(f"{name}: expected a callable or None, got {value!r}")


def _check_exception_types(name: str, value: Any, base: type[BaseException]) -> None:
    if not isinstance(value, tuple):
        raise ConfigurationError(
            f"{name}: expected a tuple of exception classes, got {type(value).__name__}"
        )
    for index, item in enumerate(value):
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(f"{name}[{index}]: expected an exception class, got {item!r}")
        if not issubclass(item, base):
            # Cancellation, KeyboardInterrupt and SystemExit never count as failures: say so
            # here rather than silently ignoring the entry.
            raise ConfigurationError(
                f"{name}[{index}]: expected a subclass of {base.__name__}, got {item.__name__} "
                "(cancellation and interpreter exits never count as failures)"
            )


class CircuitBreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a breaker trips, how long it stays open and how it recovers.

    The seed's rule (consecutive failures) is always on; every other policy is off by default.

    - ``failure_threshold``: consecutive failures in CLOSED that open the breaker.
    - ``success_threshold``: successful probes in HALF_OPEN that close it again.
    - ``timeout_duration``: seconds OPEN before the breaker lets probes through (HALF_OPEN).
    - ``reset_timeout``: seconds without a failure after which the consecutive count restarts.
    - ``monitoring_window``: seconds over which ``failure_rate`` is computed (and the time-based
      window of the rate policies).
    - ``half_open_max_calls``: probes allowed in flight at once in HALF_OPEN.
    - ``expected_exceptions``: exceptions that count as failures...
    - ``ignore_exceptions``: ...unless they are also one of these (e.g. rate limits).
      Any other exception propagates unchanged and counts as ``ignored``.
    - ``is_failure``: a predicate on the exception used *instead of* the two tuples.
    - ``failure_predicate``: a predicate on the returned value; True counts the call as a
      failure (the value is still returned).
    - ``failure_rate_threshold``: open when failed / (failed + successful) reaches it, over the
      last ``sliding_window_size`` calls if set, else over ``monitoring_window`` seconds, once
      the window holds ``minimum_calls`` calls (so ``sliding_window_size`` must be at least
      ``minimum_calls``).  Rates are evaluated after every outcome, successes included; every
      unforced change to CLOSED (recovery, reset) starts the windows afresh.
    - ``slow_call_duration`` / ``slow_call_rate_threshold``: calls slower than the duration are
      slow; open when the slow share reaches the threshold (same window and minimum).
    - ``call_timeout``: an async call running longer is cancelled and fails with
      ``CallTimeoutError``; a sync call cannot be interrupted, so one that overruns fails with
      the same error once it returns (its result is discarded).
    - ``backoff_multiplier`` / ``max_timeout_duration`` / ``backoff_jitter``: each failed probe
      multiplies the break (up to the maximum); with jitter the break is drawn uniformly between
      ``timeout_duration`` and that value.  A close restores ``timeout_duration``.
    - ``max_half_open_duration``: HALF_OPEN with no completed probe for this long goes back to
      OPEN, so a hung probe cannot hold the breaker half-open.
    """

    failure_threshold: int = 5
    success_threshold: int = 3
    timeout_duration: float = 60.0
    reset_timeout: float = 300.0
    monitoring_window: float = 60.0
    half_open_max_calls: int = 3
    expected_exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignore_exceptions: tuple[type[BaseException], ...] = ()
    is_failure: Callable[[BaseException], bool] | None = None
    failure_predicate: Callable[[Any], bool] | None = None
    failure_rate_threshold: float | None = None
    sliding_window_size: int | None = None
    minimum_calls: int = 10
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 1.0
    call_timeout: float | None = None
    backoff_multiplier: float = 1.0
    max_timeout_duration: float | None = None
    backoff_jitter: bool = False
    max_half_open_duration: float | None = None

    def __post_init__(self) -> None:
        _check_int("failure_threshold", self.failure_threshold, 1)
        _check_int("success_threshold", self.success_threshold, 1)
        _check_int("half_open_max_calls", self.half_open_max_calls, 1)
        _check_int("minimum_calls", self.minimum_calls, 1)
        if self.sliding_window_size is not None:
            _check_int("sliding_window_size", self.sliding_window_size, 1)
        _check_duration("timeout_duration", self.timeout_duration)
        _check_duration("reset_timeout", self.reset_timeout)
        _check_duration("monitoring_window", self.monitoring_window)
        _check_optional_duration("slow_call_duration", self.slow_call_duration)
        _check_optional_duration("call_timeout", self.call_timeout)
        _check_optional_duration("max_timeout_duration", self.max_timeout_duration)
        _check_optional_duration("max_half_open_duration", self.max_half_open_duration)
        _check_ratio("failure_rate_threshold", self.failure_rate_threshold, optional=True)
        _check_ratio("slow_call_rate_threshold", self.slow_call_rate_threshold, optional=False)
        _check_exception_types("expected_exceptions", self.expected_exceptions, Exception)
        _check_exception_types("ignore_exceptions", self.ignore_exceptions, BaseException)
        _check_callable("is_failure", self.is_failure)
        _check_callable("failure_predicate", self.failure_predicate)
        multiplier = self.backoff_multiplier
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise ConfigurationError(
                f"backoff_multiplier: expected a number >= 1, got {multiplier!r}"
            )
        if not (multiplier >= 1 and math.isfinite(multiplier)):
            raise ConfigurationError(
                f"backoff_multiplier: expected a number >= 1, got {multiplier!r}"
            )
        if not isinstance(self.backoff_jitter, bool):
            raise ConfigurationError(
                f"backoff_jitter: expected a bool, got {self.backoff_jitter!r}"
            )
        if (
            self.max_timeout_duration is not None
            and self.max_timeout_duration < self.timeout_duration
        ):
            raise ConfigurationError(
                f"max_timeout_duration: expected >= timeout_duration ({self.timeout_duration!r}), "
                f"got {self.max_timeout_duration!r}"
            )
        if self.sliding_window_size is not None and self.sliding_window_size < self.minimum_calls:
            # The last N calls never hold more than N: the rate policies would never apply.
            # (A time window has no such bound: any number of calls fits in a second.)
            raise ConfigurationError(
                f"sliding_window_size: expected >= minimum_calls ({self.minimum_calls!r}), "
                f"got {self.sliding_window_size!r}: a window of fewer calls than minimum_calls "
                "never judges a rate"
            )

    def counts_as_failure(self, exc: BaseException) -> bool:
        """True when ``exc`` counts against the breaker; False means it is ``ignored``."""
        if self.is_failure is not None:
            return bool(self.is_failure(exc))
        return isinstance(exc, self.expected_exceptions) and not isinstance(
            exc, self.ignore_exceptions
        )

    @property
    def uses_rate_window(self) -> bool:
        """Whether a failure-rate or slow-call policy needs the rate window evaluated."""
        return self.failure_rate_threshold is not None or self.slow_call_duration is not None

    @property
    def needs_caller_policies(self) -> bool:
        """Whether the caller itself must act (a timeout to enforce, a result to judge), which
        takes calls off the plainest fast path."""
        return self.call_timeout is not None or self.failure_predicate is not None


DEFAULT_CONFIG = CircuitBreakerConfig()

#: Equal configs share one object (see :func:`interned`); at most this many distinct ones.
INTERNED_LIMIT = 1024
_interned: dict[CircuitBreakerConfig, CircuitBreakerConfig] = {DEFAULT_CONFIG: DEFAULT_CONFIG}
_interned_ids: set[int] = {id(DEFAULT_CONFIG)}


def interned(config: CircuitBreakerConfig) -> CircuitBreakerConfig:
    """The first config equal to ``config`` that was interned, or ``config`` itself.

    Configs are frozen, so breakers built in a loop with ``CircuitBreakerConfig(...)`` each
    can share one object (about 250 bytes saved per breaker).  Bounded: past
    :data:`INTERNED_LIMIT` distinct configs (say, one ``is_failure`` lambda per breaker) new
    ones are kept as they are rather than growing the table without end.
    """
    if id(config) in _interned_ids:  # already the shared one: skip hashing 20 fields
        return config
    try:
        shared = _interned.get(config)
    except TypeError:  # an unhashable field value (a callable object that is not hashable)
        return config
    if shared is not None:
        return shared
    if len(_interned) < INTERNED_LIMIT:
        shared = _interned.setdefault(config, config)
        _interned_ids.add(id(shared))  # stable: the table keeps it alive
        return shared
    return config
