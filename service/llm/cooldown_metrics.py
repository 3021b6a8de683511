"""Rate-limit cooldowns as OpenTelemetry metrics, read from the live cooldowns at collection.

``service.llm.cooldown`` already counts what a 429 did (``rate_limited``) and keeps when each
provider may be called again; ``/breakers`` shows it.  This exports the same numbers to
``GET /metrics`` and OTLP, per provider breaker (``circuit_breaker.name``, the attribute the
breaker metrics use, so the two join on it):

- ``breakerd.llm.rate_limited``: an observable counter of the cooldown's ``rate_limited``;
- ``breakerd.llm.cooldown.remaining``: an observable gauge of its ``remaining()`` seconds.

Observable instruments cost nothing per request: the chain keeps counting in plain attributes
as it did, and the callbacks read them only when a reader collects.  Those callbacks run on the
reader's thread (the OTLP reader's, or a ``/metrics`` scrape's worker thread) while the loop
writes the cooldowns; each reads an int, a float and the clock, so the worst a race costs is a
count one scrape late.

The service wires this in at its entry point (``service.lifecycle``), never the reverse:
``telemetry`` must not import ``service``, and the OpenTelemetry API is imported here only
when telemetry is on.  The system is held weakly: a long-lived (host's) meter provider must not
keep a finished actor system alive; once it is gone nothing is reported.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from actors.system import ActorSystem
from service.llm.cooldown import Cooldown, cooldowns
from telemetry import names
from telemetry.instrument import VERSION


class CooldownMetrics:
    """Registers the two cooldown instruments of ``system`` on ``meter_provider``'s
    ``breakerd`` meter.  Create it once per meter provider (the SDK ignores a second instrument
    of the same name)."""

    __slots__ = ("_system",)

    def __init__(self, meter_provider: MeterProvider, system: ActorSystem) -> None:
        self._system = weakref.ref(system)
        meter = meter_provider.get_meter(names.SCOPE, VERSION)
        meter.create_observable_counter(
            names.LLM_RATE_LIMITED,
            callbacks=[self._observe_rate_limited],
            unit=names.LLM_RATE_LIMITED_UNIT,
            description=names.LLM_RATE_LIMITED_DESCRIPTION,
        )
        meter.create_observable_gauge(
            names.LLM_COOLDOWN_REMAINING,
            callbacks=[self._observe_remaining],
            unit=names.LLM_COOLDOWN_REMAINING_UNIT,
            description=names.LLM_COOLDOWN_REMAINING_DESCRIPTION,
        )

    def __repr__(self) -> str:
        return f"<CooldownMetrics cooldowns={len(self._cooldowns())}>"

    def _cooldowns(self) -> list[Cooldown]:
        system = self._system()
        return [] if system is None else list(cooldowns(system).values())

    def _observe_rate_limited(self, options: CallbackOptions) -> Iterator[Observation]:
        for cooldown in self._cooldowns():
            yield Observation(cooldown.rate_limited, _attributes(cooldown))

    def _observe_remaining(self, options: CallbackOptions) -> Iterator[Observation]:
        for cooldown in self._cooldowns():
            yield Observation(cooldown.remaining(), _attributes(cooldown))


def _attributes(cooldown: Cooldown) -> dict[str, str]:
    return {names.NAME: cooldown.name}
