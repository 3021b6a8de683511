"""Every name breakerd's telemetry exports: instruments, units, attributes, spans, span events.

Named after OpenTelemetry's naming guidelines: lowercase, dot-separated namespaces under
``circuit_breaker``, snake_case inside a component, units in UCUM (``s``, ``1``) or as
annotations in braces (``{call}``), no unit in the name, and no name that is both a leaf and a
namespace (metric names and attribute names share one universe, so the 1/0-per-state metric is
``circuit_breaker.status`` with the attribute ``circuit_breaker.state``, as semantic conventions
do with ``hw.status`` and ``hw.state``).
"""

from __future__ import annotations

from typing import Final

#: Instrumentation scope of every meter and tracer breakerd uses.
SCOPE: Final = "breakerd"

# -- attributes ---------------------------------------------------------------------------------
NAME: Final = "circuit_breaker.name"
OUTCOME: Final = "circuit_breaker.call.outcome"  # success | failure | ignored | rejected
STATE: Final = "circuit_breaker.state"  # closed | open | half_open
TRANSITION_FROM: Final = "circuit_breaker.transition.from"
TRANSITION_TO: Final = "circuit_breaker.transition.to"
TRANSITION_REASON: Final = "circuit_breaker.transition.reason"
FORCED: Final = "circuit_breaker.forced"
CONSECUTIVE_FAILURES: Final = "circuit_breaker.consecutive_failures"
FAILED_CALLS: Final = "circuit_breaker.failed_calls"
TOTAL_CALLS: Final = "circuit_breaker.total_calls"
REJECTED_CALLS: Final = "circuit_breaker.rejected_calls"
HALF_OPEN_ATTEMPTS: Final = "circuit_breaker.half_open_attempts"
CLOSE_REASON: Final = "circuit_breaker.close_reason"
PROBE_COUNT: Final = "circuit_breaker.probe.count"
PROBE_SUCCESSES: Final = "circuit_breaker.probe.successes"
PROBE_FAILURES: Final = "circuit_breaker.probe.failures"
RETRY_AFTER: Final = "circuit_breaker.retry_after"
ERROR_TYPE: Final = "error.type"  # semantic conventions' own

OUTCOMES: Final = ("success", "failure", "ignored", "rejected")

# -- instruments (name, unit) -------------------------------------------------------------------
CALLS: Final = "circuit_breaker.calls"
CALLS_UNIT: Final = "{call}"
CALLS_DESCRIPTION: Final = "Calls through the breaker, by outcome."

CALL_DURATION: Final = "circuit_breaker.call.duration"
CALL_DURATION_UNIT: Final = "s"
CALL_DURATION_DESCRIPTION: Final = (
    "Duration of calls the breaker let through (rejections excluded)."
)

STATUS: Final = "circuit_breaker.status"
STATUS_UNIT: Final = "1"
STATUS_DESCRIPTION: Final = "1 for the breaker's current state, 0 for the others."

TRANSITIONS: Final = "circuit_breaker.transitions"
TRANSITIONS_UNIT: Final = "{transition}"
TRANSITIONS_DESCRIPTION: Final = "State changes, by from, to and reason."

FAILURE_RATE: Final = "circuit_breaker.failure_rate"
FAILURE_RATE_UNIT: Final = "1"
FAILURE_RATE_DESCRIPTION: Final = (
    "Failures / (failures + successes) over the monitoring window, as of the last recorded calls."
)

DROPPED_EVENTS: Final = "circuit_breaker.bus.event.dropped"
DROPPED_EVENTS_UNIT: Final = "{event}"
DROPPED_EVENTS_DESCRIPTION: Final = "Bus events dropped because a subscriber fell behind."

CLUSTER_LINK: Final = "circuit_breaker.cluster.link.status"
CLUSTER_LINK_UNIT: Final = "1"
CLUSTER_LINK_DESCRIPTION: Final = (
    "Cluster mode: 1 for the link's current status (connected, connecting, disconnected), "
    "0 for the others."
)
LINK_STATUS: Final = "circuit_breaker.cluster.link.state"
LINK_STATUSES: Final = ("connected", "connecting", "disconnected")

# -- spans and span events ----------------------------------------------------------------------
OPEN_SPAN: Final = "circuit_breaker.open"
CALL_SPAN: Final = "circuit_breaker.call"
STATE_CHANGE_EVENT: Final = "circuit_breaker.state_change"
PROBE_EVENT: Final = "circuit_breaker.probe.completed"
REJECTED_EVENT: Final = "circuit_breaker.call.rejected"

# -- the service's gateway (recorded per request by the service, not by breakers) ---------------
GATEWAY_REQUESTS: Final = "breakerd.gateway.requests"
GATEWAY_REQUESTS_UNIT: Final = "{request}"
GATEWAY_REQUESTS_DESCRIPTION: Final = "Gateway requests, by route, serving provider and status."

GATEWAY_DURATION: Final = "breakerd.gateway.request.duration"
GATEWAY_DURATION_UNIT: Final = "s"
GATEWAY_DURATION_DESCRIPTION: Final = (
    "Gateway request duration (until the answer or the stream ended), by route, provider, status."
)
GATEWAY_ROUTE: Final = "breakerd.route"
GATEWAY_PROVIDER: Final = "breakerd.provider"
HTTP_STATUS: Final = "http.response.status_code"  # semantic conventions' own
#: Seconds: LLM requests take from tens of milliseconds to minutes.
GATEWAY_DURATION_BOUNDS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# -- the service's LLM chain (read from its rate-limit cooldowns at collection) -----------------
LLM_RATE_LIMITED: Final = "breakerd.llm.rate_limited"
LLM_RATE_LIMITED_UNIT: Final = "{response}"
LLM_RATE_LIMITED_DESCRIPTION: Final = (
    "Upstream 429 (rate-limited) answers, by provider breaker; each is also an ignored call of "
    "that breaker."
)

LLM_COOLDOWN_REMAINING: Final = "breakerd.llm.cooldown.remaining"
LLM_COOLDOWN_REMAINING_UNIT: Final = "s"
LLM_COOLDOWN_REMAINING_DESCRIPTION: Final = (
    "Seconds until a rate-limited provider may be called again (0 when it may now), by provider "
    "breaker."
)
