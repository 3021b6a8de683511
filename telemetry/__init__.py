"""OpenTelemetry for breakerd: metrics and spans from the event bus, never from the hot path.

Applications call :func:`setup` (OTLP exporters configured by the standard ``OTEL_*``
variables, or the host's global providers) and shut the returned handle down when the actor
system stops; benchmarks and tests call :func:`setup_in_memory`; libraries that bring their own
providers call :func:`instrument`.  :func:`traced` opts a guarded function into sampled
per-call spans.  Every exported name is in :mod:`telemetry.names`.

Only ``telemetry.setup`` uses the OpenTelemetry SDK; it is imported here eagerly all the same,
because the function ``setup`` shares its module's name and a lazy import would let the module
shadow the function.
"""

from actors.extras import missing_extra

try:
    import opentelemetry.metrics  # noqa: F401  (the API: present only with the extra)
except ImportError as exc:
    raise missing_extra("opentelemetry", "otel", "breakerd's telemetry") from exc

from telemetry.instrument import Instrumentation, instrument
from telemetry.setup import Telemetry, setup, setup_in_memory
from telemetry.tracing import traced

__all__ = ["Instrumentation", "Telemetry", "instrument", "setup", "setup_in_memory", "traced"]
