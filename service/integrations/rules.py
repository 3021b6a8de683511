"""What an HTTP answer means to a breaker, shared by the aiohttp and httpx integrations.

Per request, the breaker for the request's key (default: scheme, host and port; or any
callable of the URL) guards the exchange up to the response headers:

- counted as failures: 5xx, 408 and (with ``count_429``) 429, connection errors and timeouts:
  what the upstream did;
- ignored (neither success nor failure): 429 by default (a rate limit says "not now", not
  "broken", as in the LLM client), cancellation, and errors of our own making (a bad URL);
- anything else is a success, including 4xx: the upstream answered.

A rejected request raises :class:`~actors.errors.CircuitBreakerOpenError` before the library
opens a connection.  A 503 with a sane ``Retry-After`` (a number of seconds or an HTTP date,
more than 0 and at most ``max_retry_after``) that leaves the breaker OPEN makes the break last
at least that long: requests are refused until then even if the breaker's own
``timeout_duration`` is shorter (a shorter ``Retry-After`` does not cut the configured break
short).  Breakers are the system's named breakers (``ActorSystem.breaker``), so the monitor,
health and telemetry see them, and ``max_idle`` / ``max_breakers`` evict them (see
``actors.eviction``).

Alternatives considered: counting 429 by default (it would open breakers on a quota, which
the client cannot fix by waiting less), and judging the body too (the middleware returns
before the body is read, so a body that breaks off is not counted: guard the read yourself
with ``breaker.guarded_async()`` if it matters).
"""

from __future__ import annotations

import email.utils
import math
import threading
from collections.abc import Callable, Mapping
from typing import Final, Generic, TypeVar

import msgspec

from actors.breaker import Breaker
from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import CircuitBreakerOpenError
from actors.system import ActorSystem, default_system

U = TypeVar("U")

#: Default upper bound on a ``Retry-After`` that extends a break (seconds).
MAX_RETRY_AFTER: Final = 300.0


class StatusMarker(Exception):
    """Raised inside the guarded block (:meth:`HttpBreakers.raise_for_status`) for a status
    that is not a success, so that the breaker sees it; the integration catches it and hands
    the response back (callers never see it)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class UpstreamStatus(StatusMarker):
    """A status that counts as a failure (5xx, 408, and 429 with ``count_429``)."""


class IgnoredStatus(StatusMarker):
    """A status that is neither success nor failure (429)."""


def status_outcome(status: int, count_429: bool) -> type[StatusMarker] | None:
    """The marker to raise for ``status`` (None: a success)."""
    if status >= 500 or status == 408 or (status == 429 and count_429):
        return UpstreamStatus
    if status == 429:
        return IgnoredStatus
    return None


def retry_after(value: str | None, now_epoch: float, limit: float) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), or None when
    absent or not sane (not a number or date, <= 0, over ``limit``)."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - now_epoch
    if not (math.isfinite(seconds) and 0 < seconds <= limit):
        return None
    return seconds


class HttpBreakers(Generic[U]):
    """The breakers of one HTTP client (or several), by key; thread-safe.

    ``is_failure``: the integration's judge of exceptions (:class:`UpstreamStatus` and the
    library's connection errors and timeouts), one module-level function per library so that
    clients sharing a system and a config build equal configs.
    """

    def __init__(
        self,
        *,
        key: Callable[[U], str],
        is_failure: Callable[[BaseException], bool],
        system: ActorSystem | None,
        config: CircuitBreakerConfig | None,
        count_429: bool,
        max_retry_after: float,
        max_idle: float | None,
        max_breakers: int | None,
    ) -> None:
        if not callable(key):
            raise TypeError(f"key: expected a callable of the URL, got {key!r}")
        if not isinstance(count_429, bool):
            raise TypeError(f"count_429: expected a bool, got {count_429!r}")
        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, int | float):
            raise TypeError(f"max_retry_after: expected seconds, got {max_retry_after!r}")
        self.key = key
        self.count_429 = count_429
        self.max_retry_after = float(max_retry_after)
        self.system = system if system is not None else default_system()
        if max_idle is not None or max_breakers is not None:
            self.system.enable_eviction(max_idle=max_idle, max_breakers=max_breakers)
        # The integration decides what counts; every other field is the caller's.
        self.config = msgspec.structs.replace(
            config if config is not None else CircuitBreakerConfig(), is_failure=is_failure
        )
        self._holds: dict[str, float] = {}  # key -> monotonic end of a Retry-After break
        self._lock = threading.Lock()

    def breaker(self, url: U) -> tuple[str, Breaker]:
        """The key of ``url`` and its breaker (created, or looked up, which counts as use)."""
        name = self.key(url)
        if not isinstance(name, str) or not name:
            raise TypeError(f"key: expected a non-empty string for {url!s}, got {name!r}")
        return name, self.system.breaker(name, self.config)

    def check_hold(self, name: str) -> None:
        """Raise CircuitBreakerOpenError while a ``Retry-After`` break of ``name`` lasts."""
        if not self._holds:
            return
        until = self._holds.get(name)
        if until is None:
            return
        left = until - self.system.clock.now()
        if left > 0:
            raise CircuitBreakerOpenError(name, CircuitState.OPEN, left)
        with self._lock:
            if self._holds.get(name) == until:
                del self._holds[name]

    def raise_for_status(self, status: int) -> None:
        """Raise the :class:`StatusMarker` for ``status``, or return for a success.  Called
        inside the guarded block, so that the breaker counts the marker as a failure (or
        ignores it); :meth:`settle` then handles it outside."""
        outcome = status_outcome(status, self.count_429)
        if outcome is not None:
            raise outcome(status)

    def settle(
        self, name: str, breaker: Breaker, marker: StatusMarker, headers: Mapping[str, str]
    ) -> None:
        """After the guarded block counted ``marker``: a failing 503 may extend the break to
        its ``Retry-After`` (:meth:`failed_with`); anything else needs nothing more."""
        if isinstance(marker, UpstreamStatus) and marker.status == 503:
            self.failed_with(name, breaker, headers.get("Retry-After"))

    def failed_with(self, name: str, breaker: Breaker, header: str | None) -> None:
        """A 503 was counted: extend the break to ``Retry-After`` if it is sane and the
        breaker is now OPEN."""
        clock = self.system.clock
        now = clock.now()
        seconds = retry_after(header, clock.wall(now), self.max_retry_after)
        if seconds is None or breaker.published_state is not CircuitState.OPEN:
            return
        with self._lock:
            self._holds[name] = max(self._holds.get(name, 0.0), now + seconds)
