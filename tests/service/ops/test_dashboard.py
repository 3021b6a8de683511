"""deploy/grafana/breakerd.json parses, and every metric it queries is one /metrics serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.service.http.conftest import TOKEN, Harness
from tests.service.ops.metrics_helpers import samples, scrape

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).parents[3] / "deploy" / "grafana" / "breakerd.json"


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (label names and values taken out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", expr)  # Grafana's label_values
    return set(re.findall(r"\b(?:circuit_breaker|breakerd)_[a-z0-9_]+\b", expr))


def test_the_dashboard_covers_states_outcomes_rejections_p99_and_transitions() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for needed in ("states", "outcome", "rejection", "p99", "transitions"):
        assert needed in titles
    names = set().union(*(metric_names(expr) for expr in queries(dashboard)))
    assert {
        "circuit_breaker_status",
        "circuit_breaker_calls_total",
        "circuit_breaker_call_duration_seconds_bucket",
        "circuit_breaker_transitions_total",
        "breakerd_gateway_requests_total",
    } <= names


async def test_every_metric_the_dashboard_queries_is_served(harness: Harness) -> None:
    # Make every series exist: served calls (durations), a transition each way.
    assert (await harness.chat("chat"))[0] == 200
    await harness.request("POST", f"/breakers/{harness.b}/open", token=TOKEN)
    await harness.request("POST", f"/breakers/{harness.b}/reset", token=TOKEN)
    _, text = await scrape(harness.http, harness.url)
    served = {name for name, _ in samples(text)}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for expr in queries(dashboard):
        missing = metric_names(expr) - served
        assert not missing, f"{expr!r} queries {missing}, which /metrics does not serve"
