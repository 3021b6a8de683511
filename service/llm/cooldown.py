"""Rate-limit cooldowns: a provider that answered 429 is left alone until it said to come back.

A 429 is about the caller's quota, not the provider's health, so the breaker ignores it (it
must not open for everyone because one key ran out).  But calling the provider again before
its ``Retry-After`` only earns another 429, so a cooldown sits beside each breaker: until it
ends, a chain skips the provider without calling it, and moves on to the next one (or, when
every provider cools down, raises ``RateLimitError`` with the soonest time).

Cooldowns are shared like breakers: one per breaker name (``<provider>_client``) in an actor
system, read on the system's clock, so that a ``ManualClock`` steps them in tests.

Counting: ``rate_limited`` counts 429 answers (each is also one of the breaker's
``ignored_calls``, so ``total = success + failed + ignored + rejected`` still holds);
``skipped`` counts calls not made because of a cooldown (never calls of the breaker, so
outside its ``total``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from actors.system import ActorSystem

#: A 429 without any hint cools the provider down this long.
DEFAULT_COOLDOWN = 5.0
#: No hint keeps a provider out of the chain longer than this (a broken or hostile
#: ``Retry-After`` must not take a provider away for an hour).
MAX_COOLDOWN = 60.0


class Cooldown:
    """One provider's cooldown.  Read and written on the system's loop (plain attributes)."""

    __slots__ = ("_now", "name", "rate_limited", "skipped", "until")

    def __init__(self, name: str, now: Callable[[], float]) -> None:
        self.name = name
        self._now = now
        self.until = 0.0
        self.rate_limited = 0
        self.skipped = 0

    def __repr__(self) -> str:
        return (
            f"<Cooldown {self.name!r} remaining={self.remaining():.1f}s "
            f"rate_limited={self.rate_limited} skipped={self.skipped}>"
        )

    def remaining(self) -> float:
        """Seconds until the provider may be called again (0.0 when it may now)."""
        left = self.until - self._now()
        return left if left > 0.0 else 0.0

    def hit(self, retry_after: float | None) -> float:
        """A 429 arrived: cool down for ``retry_after`` (default and cap above); returns the
        seconds left.  A later, shorter hint never shortens a cooldown already running."""
        self.rate_limited += 1
        wait = DEFAULT_COOLDOWN if retry_after is None else retry_after
        wait = min(max(wait, 0.0), MAX_COOLDOWN)
        self.until = max(self.until, self._now() + wait)
        return self.remaining()

    def clear(self) -> None:
        self.until = 0.0

    def snapshot(self) -> dict[str, Any]:
        """For ``/breakers`` and the client's metrics: the seconds left and the counts."""
        return {
            "cooldown_remaining": round(self.remaining(), 3),
            "rate_limited": self.rate_limited,
            "cooldown_skipped": self.skipped,
        }


_registries: weakref.WeakKeyDictionary[ActorSystem, dict[str, Cooldown]] = (
    weakref.WeakKeyDictionary()
)


def cooldown_for(system: ActorSystem, name: str) -> Cooldown:
    """The cooldown of breaker ``name`` in ``system`` (made on first use)."""
    registry = _registries.get(system)
    if registry is None:
        registry = _registries[system] = {}
    cooldown = registry.get(name)
    if cooldown is None:
        cooldown = registry[name] = Cooldown(name, system.clock.now)
    return cooldown


def cooldowns(system: ActorSystem) -> dict[str, Cooldown]:
    """Every cooldown of ``system``, by breaker name."""
    return dict(_registries.get(system, {}))
