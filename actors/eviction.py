"""Idle eviction for breakers created on demand: the bookkeeping and the rule.

Opt in per system with ``ActorSystem(max_idle=seconds, max_breakers=n)``.  A service that makes
a breaker per host or tenant then keeps only the ones in use: a breaker unused for
``max_idle`` seconds is removed, and past ``max_breakers`` the least recently used ones are.
Only a breaker that is CLOSED, unforced and not probing can go: an OPEN or HALF_OPEN one holds
what the service learnt about a failing dependency, and a forced one holds an operator's
decision, so evicting either would throw that away.

"Used" means looked up by name (``ActorSystem.breaker``, which is how integrations reach
their breakers on every request) or called through a held handle (the breaker's own last
success, failure or state change).  The lookup order is kept in a dict (insertion-ordered,
moved to the end on each lookup), so finding the least recently used costs a walk from its
front that stops at the first entry recent enough, not a scan of every breaker.  Nothing
runs on a timer: a sweep happens on a lookup once half of ``max_idle`` has passed since the
last one, or at once when a new breaker goes past ``max_breakers``, and ``evict_idle()`` runs
one on demand.  A system without these settings pays nothing.
"""

from __future__ import annotations

import math
from typing import Any

from actors.errors import ConfigurationError


def check_limits(max_idle: Any, max_breakers: Any) -> None:
    """Raise ConfigurationError naming the field for a bad ``max_idle`` or ``max_breakers``."""
    if max_idle is not None and (
        isinstance(max_idle, bool)
        or not isinstance(max_idle, int | float)
        or not (max_idle > 0 and math.isfinite(max_idle))
    ):
        raise ConfigurationError(f"max_idle: expected a number of seconds > 0, got {max_idle!r}")
    if max_breakers is not None and (
        isinstance(max_breakers, bool) or not isinstance(max_breakers, int) or max_breakers < 1
    ):
        raise ConfigurationError(f"max_breakers: expected int >= 1, got {max_breakers!r}")


class Eviction:
    """When each named breaker was last looked up, oldest first; owned by one system and
    changed only under its name-table lock."""

    __slots__ = ("last_sweep", "max_breakers", "max_idle", "touched")

    def __init__(self, max_idle: float | None, max_breakers: int | None) -> None:
        self.max_idle = max_idle
        self.max_breakers = max_breakers
        self.touched: dict[str, float] = {}
        self.last_sweep = -math.inf

    def touch(self, name: str, now: float) -> None:
        touched = self.touched
        touched.pop(name, None)
        touched[name] = now

    def forget(self, name: str) -> None:
        self.touched.pop(name, None)

    def due(self, now: float, breakers: int) -> bool:
        """Whether a lookup at ``now`` with ``breakers`` registered should sweep."""
        if self.max_breakers is not None and breakers > self.max_breakers:
            return True
        return self.max_idle is not None and now - self.last_sweep >= self.max_idle / 2

    def candidates(self, now: float, breakers: int) -> tuple[list[str], int]:
        """Names worth judging, least recently looked up first, and how many must go for the
        count limit.  Stops at the first name looked up within ``max_idle`` once the count
        limit is met: every later one is more recent."""
        over = breakers - self.max_breakers if self.max_breakers is not None else 0
        idle_before = self.idle_before(now)
        names: list[str] = []
        for name, touched in self.touched.items():
            if len(names) >= over and touched > idle_before:
                break
            names.append(name)
        return names, max(over, 0)

    def idle_before(self, now: float) -> float:
        """Breakers last used before this moment are idle."""
        return now - self.max_idle if self.max_idle is not None else -math.inf
