"""What the probes answer: ``GET /livez``, ``GET /readyz`` and the status code of ``GET /health``.

The conventions are Kubernetes' and Spring Boot actuator's, where an open circuit breaker is
not a failed health check: a replica whose primary provider is down but whose fallback serves
every request is exactly the replica a load balancer must keep.  So:

- *liveness* says the process is worth keeping: HTTP is served (the probe got an answer) and
  the actor system runs.  It never looks at upstreams: restarting a replica does not fix a
  provider outage.
- *readiness* says the replica can serve every configured route now: each route has at least
  one provider that can take a call (its breaker CLOSED, HALF_OPEN with a free probe slot, or
  OPEN with its break over so that the next call is the probe; not in a rate-limit cooldown;
  its API key present).  ``[health] require_primaries`` narrows this to the route's own
  provider.
- ``/health`` keeps the detailed report, and its status follows ``[health] fail_on``.

The rules are pure functions over breaker snapshots (:func:`provider_status`,
:func:`readiness`, :func:`health_status`); :class:`RouteProbe` gathers the snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import msgspec

from actors.config import CircuitState
from actors.snapshot import CircuitBreakerMetrics
from actors.system import ActorSystem, default_system
from service.config import ServiceConfig

FailOn = Literal["never", "route_unservable", "any_open"]


class ProviderStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether one provider can take a call now, and if not, why (for the 503 body)."""

    name: str
    available: bool
    reason: str | None = None


class RouteStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One route that cannot be served, with each provider of its chain and why it cannot."""

    route: str
    providers: list[ProviderStatus]


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``GET /readyz``: ``ready``, and the routes that cannot be served."""

    ready: bool
    routes: int
    unservable: list[RouteStatus] = []


class KeyedProvider(Protocol):
    """What readiness needs of a configured provider (``service.gateway.ProviderTarget``)."""

    @property
    def usable(self) -> bool: ...

    key_env: str


def provider_status(
    name: str,
    snapshot: CircuitBreakerMetrics | None,
    *,
    half_open_max_calls: int,
    key_env: str | None = None,
    cooldown: float | None = None,
) -> ProviderStatus:
    """Can provider ``name`` take a call now?  ``key_env`` is the variable of a missing key
    (None: the key is there or not needed), ``cooldown`` the seconds left of a rate-limit
    cooldown (None or <= 0: none), ``snapshot`` its breaker (None: it has none yet)."""
    if key_env is not None:
        return ProviderStatus(name=name, available=False, reason=f"no API key ({key_env})")
    if cooldown is not None and cooldown > 0:
        return ProviderStatus(
            name=name, available=False, reason=f"rate-limit cooldown, {cooldown:.1f}s left"
        )
    if snapshot is None or snapshot.state is CircuitState.CLOSED:
        return ProviderStatus(name=name, available=True)
    if snapshot.state is CircuitState.HALF_OPEN:
        if snapshot.half_open_calls_in_flight < half_open_max_calls:
            return ProviderStatus(name=name, available=True)
        return ProviderStatus(
            name=name, available=False, reason="breaker half-open, every probe slot taken"
        )
    retry = snapshot.retry_after
    if snapshot.forced or retry is None or math.isinf(retry):
        return ProviderStatus(name=name, available=False, reason="breaker forced open")
    if retry > 0:
        return ProviderStatus(
            name=name, available=False, reason=f"breaker open, next probe in {retry:.1f}s"
        )
    # The break is over: admission lets the next call through as the probe.
    return ProviderStatus(name=name, available=True)


def readiness(
    chains: Mapping[str, Sequence[str]],
    statuses: Mapping[str, ProviderStatus],
    *,
    require_primaries: bool = False,
) -> Readiness:
    """Ready when every route in ``chains`` (route -> providers, primary first) has an
    available provider (its primary, with ``require_primaries``)."""
    unservable = []
    for route, chain in chains.items():
        considered = [statuses[name] for name in (chain[:1] if require_primaries else chain)]
        if not any(status.available for status in considered):
            unservable.append(RouteStatus(route=route, providers=considered))
    return Readiness(ready=not unservable, routes=len(chains), unservable=unservable)


def health_status(fail_on: FailOn, summary: Mapping[str, Any], ready: Readiness) -> int:
    """The status code of ``GET /health`` for a summary the monitor produced."""
    if fail_on == "route_unservable" and not ready.ready:
        return 503
    if fail_on == "any_open":
        states = (entry.get("state") for entry in summary.get("circuit_breakers", {}).values())
        if any(state == CircuitState.OPEN.value for state in states):
            return 503
    return 200


def alive(system: ActorSystem | None = None) -> bool:
    """The actor system runs: it is not closed (breakers would fail every call)."""
    return not (system or default_system()).runtime.closed


CooldownSource = Callable[[str], float | None]


class RouteProbe:
    """Readiness of the configured routes, from their providers' breakers.

    ``providers`` maps each provider name to its resolved target (key present or not);
    ``breaker_of`` names a provider's breaker; ``cooldown`` gives the seconds left of a
    provider's rate-limit cooldown, if the gateway keeps them.  Runs on the service's loop.
    """

    def __init__(
        self,
        config: ServiceConfig,
        providers: Mapping[str, KeyedProvider],
        *,
        breaker_of: Callable[[str], str] = "{}_client".format,
        cooldown: CooldownSource | None = None,
        system: ActorSystem | None = None,
    ) -> None:
        self.chains = {
            name: [route.provider, *route.fallbacks] for name, route in config.routes.items()
        }
        self.providers = providers
        self.require_primaries = config.health.require_primaries
        self._breaker_of = breaker_of
        self._cooldown = cooldown
        self._system = system

    def __repr__(self) -> str:
        return f"<RouteProbe routes={len(self.chains)} require_primaries={self.require_primaries}>"

    async def statuses(self) -> dict[str, ProviderStatus]:
        breakers = (self._system or default_system()).breakers()
        used = {name for chain in self.chains.values() for name in chain}
        statuses = {}
        for name in sorted(used):
            target = self.providers.get(name)
            breaker = breakers.get(self._breaker_of(name))
            snapshot = None if breaker is None else await breaker.metrics_async()
            statuses[name] = provider_status(
                name,
                snapshot,
                half_open_max_calls=1 if breaker is None else breaker.config.half_open_max_calls,
                key_env=None if target is None or target.usable else target.key_env,
                cooldown=None if self._cooldown is None else self._cooldown(name),
            )
        return statuses

    async def check(self) -> Readiness:
        return readiness(
            self.chains, await self.statuses(), require_primaries=self.require_primaries
        )


async def no_routes() -> Readiness:
    """Readiness of a service without a gateway: nothing to route, so ready."""
    return Readiness(ready=True, routes=0)
