"""Row 1t's hook: row 1 (async success, one task) with telemetry on, in-memory exporter.

Wired to ``telemetry.setup_in_memory()``: breakerd's real telemetry (the telemetry actor on the
bus, metrics through an SDK ``MeterProvider`` into an ``InMemoryMetricReader``, spans into an
``InMemorySpanExporter``) on the process-wide actor system, which is the one ``CircuitBreaker()``
uses.  The bench switches it on before a measurement and shuts it down after (both untimed, on
the measuring loop), so the same breaker is measured with and without telemetry in every round.

If the telemetry package does not provide it (e.g. a partial checkout), the row is reported as
"not available" and does not fail the run.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

MISSING = "telemetry.setup_in_memory() not found"
WHERE = "telemetry.setup_in_memory"


class Switch:
    """Turns telemetry on for the length of one measurement."""

    def __init__(self, setup_in_memory: Callable[[], Any]) -> None:
        self._setup = setup_in_memory

    def around(self, runner: asyncio.Runner, measure: Callable[[], float]) -> Callable[[], float]:
        """``measure`` with telemetry set up before it and shut down after it, both on
        ``runner``'s loop (where the process-wide actor system runs)."""

        async def install() -> Any:
            return self._setup()

        def measured() -> float:
            telemetry = runner.run(install())
            try:
                return measure()
            finally:
                runner.run(telemetry.shutdown_async())

        return measured


def find() -> Switch | None:
    """The telemetry switch, or None when the telemetry package does not provide it."""
    try:
        telemetry = importlib.import_module("telemetry")
    except ImportError:
        return None
    setup_in_memory = getattr(telemetry, "setup_in_memory", None)
    if not callable(setup_in_memory):
        return None
    return Switch(setup_in_memory)
