"""The monitor: health, performance figures and management for every breaker of a registry.

:func:`get_circuit_breaker_monitor` returns the process-wide :class:`CircuitBreakerMonitor`,
which covers every named breaker of the default actor system (``get_circuit_breaker``, the
``circuit_breaker`` decorator factory, and anything else registered there).  A monitor of your
own can watch another :class:`~actors.system.ActorSystem`.

Every method has an ``_async`` twin with the same result; the sync ones work from any thread,
including inside a coroutine on the breakers' own loop (asks are answered inline there).

How the health summary is made: the monitor reads what the health rules need of every breaker
in one pass on the breakers' loop (``ActorSystem.read_all`` with ``actors.health.observe``: one
ask in all, not one per breaker, and no full snapshots), tells it to its
:class:`~actors.health.HealthAggregator` as one message (the aggregator also follows the event
bus), and asks the aggregator for its report.  Performance figures and resets go through
``ActorSystem.apply_all`` the same way.  A breaker whose snapshot
cannot be gathered gets the status ``error``; nothing raises because one breaker is broken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from actors.breaker import Breaker
from actors.config import CircuitState
from actors.health import (
    DEFAULT_DEGRADED_THRESHOLD,
    BreakerHealth,
    GetHealth,
    HealthAggregator,
    HealthCommand,
    HealthReport,
    HealthStatus,
    Observation,
    ObservedStates,
    check_degraded_threshold,
    observe,
)
from actors.machine import BreakerData, failure_rate
from actors.messages import Reset
from actors.system import ActorSystem, default_system

__all__ = ["CircuitBreakerMonitor", "get_circuit_breaker_monitor"]

logger = logging.getLogger("service.monitor")

_MARKS = {
    HealthStatus.HEALTHY: "ok  ",
    HealthStatus.DEGRADED: "WARN",
    HealthStatus.FAILED: "FAIL",
    HealthStatus.ERROR: "ERR ",
}


class CircuitBreakerMonitor:
    """Health, performance and management over the named breakers of one actor system.

    ``system`` defaults to the process-wide system (looked up at each call).
    ``degraded_threshold`` is the failure rate (0..1] at or above which a CLOSED breaker is
    ``degraded``.  Raises :class:`~actors.errors.ConfigurationError` for a bad threshold.
    """

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        degraded_threshold: float = DEFAULT_DEGRADED_THRESHOLD,
    ) -> None:
        self._system = system
        self.degraded_threshold = check_degraded_threshold(degraded_threshold)
        self._aggregator: HealthAggregator | None = None
        self._lock = threading.Lock()  # guards the lazy aggregator only

    def __repr__(self) -> str:
        return (
            f"<CircuitBreakerMonitor system={self.system.name!r} "
            f"threshold={self.degraded_threshold} breakers={len(self.system.breakers())}>"
        )

    @property
    def system(self) -> ActorSystem:
        return self._system if self._system is not None else default_system()

    def aggregator(self) -> HealthAggregator:
        """The health aggregator this monitor feeds and asks, started on first use."""
        aggregator = self._aggregator
        if aggregator is None:
            with self._lock:
                if self._aggregator is None:
                    system = self.system
                    self._aggregator = HealthAggregator.start(
                        system.runtime, system.bus, degraded_threshold=self.degraded_threshold
                    )
                aggregator = self._aggregator
        return aggregator

    def close(self) -> None:
        """Unsubscribe the aggregator from the bus (a later query starts a new one)."""
        with self._lock:
            aggregator, self._aggregator = self._aggregator, None
        if aggregator is not None:
            aggregator.stop()

    # -- gathering (the only place sync and async differ) -------------------------------------

    def _tell_observations(self, observed: dict[str, Observation | Exception]) -> HealthAggregator:
        aggregator = self.aggregator()
        aggregator.tell(_observations(observed))
        return aggregator

    # -- health -------------------------------------------------------------------------------

    def get_health_report(self) -> HealthReport:
        """The aggregator's typed report, after feeding it fresh snapshots."""
        observed = self.system.read_all(observe)
        report: HealthReport = self._tell_observations(observed).ask(GetHealth())
        return report

    async def get_health_report_async(self) -> HealthReport:
        aggregator = self._tell_observations(await self.system.read_all_async(observe))
        report: HealthReport = await aggregator.ask_async(GetHealth())
        return report

    def get_health_summary(self) -> dict[str, Any]:
        """A JSON-ready summary::

            {"overall_health": "healthy" | "degraded" | "failed" | "error",
             "total_breakers": int,
             "healthy": int, "degraded": int, "failed": int, "error": int,
             "degraded_threshold": float,
             "circuit_breakers": {name: {"state": "closed" | "open" | "half_open" | None,
                                         "status": ..., "failure_rate": float,
                                         "forced": bool, "error": str (only with status error)}}}

        Raises :class:`~actors.errors.ActorSystemClosedError` once the system is closed.
        """
        return self._with_cluster(_summary(self.get_health_report()))

    async def get_health_summary_async(self) -> dict[str, Any]:
        return self._with_cluster(_summary(await self.get_health_report_async()))

    def _with_cluster(self, summary: dict[str, Any]) -> dict[str, Any]:
        """In cluster mode, add the link's state; a link that is not connected makes the
        overall health at least ``degraded`` (breakers then decide per replica)."""
        link = self.system.cluster
        status = getattr(link, "status", None)
        if status is None:
            return summary
        summary["cluster"] = {"status": status}
        if status != "connected" and summary["overall_health"] == "healthy":
            summary["overall_health"] = "degraded"
        return summary

    def log_health_report(self, level: int | str = logging.INFO) -> None:
        """Log the health summary as one readable multi-line message on ``service.monitor``."""
        logger.log(_level(level), "%s", _render(self.get_health_report()))

    async def log_health_report_async(self, level: int | str = logging.INFO) -> None:
        logger.log(_level(level), "%s", _render(await self.get_health_report_async()))

    # -- performance --------------------------------------------------------------------------

    def get_performance_metrics(self) -> dict[str, Any]:
        """Per-breaker call counts, failure rate and call-duration percentiles, plus totals::

            {"total_calls": int, "total_successes": int, "total_failures": int,
             "total_ignored": int, "total_rejections": int,
             "overall_failure_rate": float,   # failures / (successes + failures), all breakers
             "circuit_breakers": {name: {"state": str, "calls": int, "successes": int,
                                         "failures": int, "ignored": int, "rejections": int,
                                         "failure_rate": float,  # over the monitoring window
                                         "duration_p50": float | None,  # seconds
                                         "duration_p95": float | None,
                                         "duration_p99": float | None}
                                   | {"error": str}}}

        Counts are since the breaker was created or last reset; percentiles come from the
        breaker actor's duration histogram (within about 19 %).
        """
        return _performance(self.system.read_all(_performance_entry))

    async def get_performance_metrics_async(self) -> dict[str, Any]:
        return _performance(await self.system.read_all_async(_performance_entry))

    # -- management ---------------------------------------------------------------------------

    def reset_all_circuit_breakers(self) -> dict[str, bool]:
        """Reset every breaker; name -> whether its reset succeeded.  One pass over all of
        them on the breakers' loop (``ActorSystem.apply_all``), one log line in all plus one
        per failure."""
        return _reset_results(self.system.apply_all(Reset()))

    async def reset_all_circuit_breakers_async(self) -> dict[str, bool]:
        return _reset_results(await self.system.apply_all_async(Reset()))

    def force_open_circuit_breaker(self, name: str) -> bool:
        """Hold breaker ``name`` OPEN; False (and a warning) if there is none or it failed."""
        breaker = self._find(name)
        return breaker is not None and _attempt("force_open", name, breaker.force_open)

    async def force_open_circuit_breaker_async(self, name: str) -> bool:
        breaker = self._find(name)
        return breaker is not None and await _attempt_async(
            "force_open", name, breaker.force_open_async
        )

    def force_close_circuit_breaker(self, name: str) -> bool:
        """Hold breaker ``name`` CLOSED; False (and a warning) if there is none or it failed."""
        breaker = self._find(name)
        return breaker is not None and _attempt("force_close", name, breaker.force_close)

    async def force_close_circuit_breaker_async(self, name: str) -> bool:
        breaker = self._find(name)
        return breaker is not None and await _attempt_async(
            "force_close", name, breaker.force_close_async
        )

    def _find(self, name: str) -> Breaker | None:
        breaker = self.system.get(name)
        if breaker is None:
            logger.warning("no circuit breaker named %r", name)
        return breaker


# -- pure helpers -----------------------------------------------------------------------------


def _unavailable(name: str, exc: Exception) -> Exception:
    logger.warning("could not gather metrics of circuit breaker %r: %s", name, _describe(exc))
    return exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _observations(observed: dict[str, Observation | Exception]) -> HealthCommand:
    states = []
    errors = []
    for name, result in observed.items():
        if isinstance(result, Exception):
            errors.append((name, _describe(_unavailable(name, result))))
        else:
            states.append(result)
    return ObservedStates(states=tuple(states), errors=tuple(errors))


def _reset_results(replies: dict[str, Any]) -> dict[str, bool]:
    results: dict[str, bool] = {}
    for name, reply in replies.items():
        if isinstance(reply, Exception):
            logger.error("reset of circuit breaker %r failed: %s", name, _describe(reply))
            results[name] = False
        else:
            results[name] = True
    logger.info("reset of %d circuit breakers done", sum(results.values()))
    return results


def _entry(health: BreakerHealth) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "state": health.state.value if health.state is not None else None,
        "status": health.status.value,
        "failure_rate": health.failure_rate,
        "forced": health.forced,
    }
    if health.error is not None:
        entry["error"] = health.error
    return entry


def _summary(report: HealthReport) -> dict[str, Any]:
    return {
        "overall_health": report.overall.value,
        "total_breakers": len(report.breakers),
        **report.counts(),
        "degraded_threshold": report.degraded_threshold,
        "circuit_breakers": {name: _entry(health) for name, health in report.breakers.items()},
    }


def _render(report: HealthReport) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in report.counts().items())
    lines = [
        f"Circuit breaker health: {report.overall.value.upper()} "
        f"({len(report.breakers)} breakers: {counts})"
    ]
    for name, health in report.breakers.items():
        state = health.state.value if health.state is not None else "unknown"
        line = f"  [{_MARKS[health.status]}] {name}: {state}, rate {health.failure_rate:.1%}"
        if health.forced:
            line += ", forced"
        if health.error is not None:
            line += f", error: {health.error}"
        lines.append(line)
    return "\n".join(lines)


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"level: expected a logging level, got {level!r}")
    return number


#: Enum values looked up once (``.value`` on an enum member is a slow property in 3.11).
_STATE_VALUES = {state: state.value for state in CircuitState}
_COUNTED = ("calls", "successes", "failures", "ignored", "rejections")
_NO_DURATIONS = dict.fromkeys(("duration_p50", "duration_p95", "duration_p99"))


def _performance_entry(
    name: str, data: BreakerData | None, now: float, epoch: float
) -> dict[str, Any]:
    """One breaker's performance figures, read from its data on the runtime's thread (an
    ``ActorSystem.read_all`` reader: no snapshot object on the way)."""
    if data is None:  # dormant: never called
        return {
            "state": "closed",
            **dict.fromkeys(_COUNTED, 0),
            "failure_rate": 0.0,
            **_NO_DURATIONS,
        }
    durations = data.durations
    return {
        "state": _STATE_VALUES[data.state],
        "calls": data.total_calls,
        "successes": data.successful_calls,
        "failures": data.failed_calls,
        "ignored": data.ignored_calls,
        "rejections": data.rejected_calls,
        "failure_rate": failure_rate(data, now),
        "duration_p50": durations.percentile(0.50) if durations is not None else None,
        "duration_p95": durations.percentile(0.95) if durations is not None else None,
        "duration_p99": durations.percentile(0.99) if durations is not None else None,
    }


def _performance(entries: dict[str, dict[str, Any] | Exception]) -> dict[str, Any]:
    breakers: dict[str, Any] = {}
    totals = dict.fromkeys(_COUNTED, 0)
    for name, entry in entries.items():
        if isinstance(entry, Exception):
            breakers[name] = {"error": _describe(_unavailable(name, entry))}
            continue
        for key in _COUNTED:
            totals[key] += entry[key]
        breakers[name] = entry
    decided = totals["successes"] + totals["failures"]
    return {
        **{f"total_{key}": value for key, value in totals.items()},
        "overall_failure_rate": totals["failures"] / decided if decided else 0.0,
        "circuit_breakers": breakers,
    }


def _attempt(action: str, name: str, operation: Callable[[], None]) -> bool:
    try:
        operation()
    except Exception as exc:
        logger.error("%s of circuit breaker %r failed: %s", action, name, _describe(exc))
        return False
    logger.info("%s of circuit breaker %r done", action, name)
    return True


async def _attempt_async(action: str, name: str, operation: Callable[[], Awaitable[None]]) -> bool:
    try:
        await operation()
    except Exception as exc:
        logger.error("%s of circuit breaker %r failed: %s", action, name, _describe(exc))
        return False
    logger.info("%s of circuit breaker %r done", action, name)
    return True


_monitor: CircuitBreakerMonitor | None = None
_monitor_lock = threading.Lock()


def get_circuit_breaker_monitor() -> CircuitBreakerMonitor:
    """The process-wide monitor over the default registry (created on first use)."""
    global _monitor
    monitor = _monitor
    if monitor is None:
        with _monitor_lock:
            if _monitor is None:
                _monitor = CircuitBreakerMonitor()
            monitor = _monitor
    return monitor
