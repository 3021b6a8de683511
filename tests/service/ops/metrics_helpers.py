"""Scraping ``/metrics`` and driving an outage cycle, shared by the metrics tests."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.service.http.conftest import TOKEN, Harness, wait_for

#: ``/breakers`` snapshot field -> the ``circuit_breaker.call.outcome`` it is counted under.
OUTCOME_FIELDS = {
    "success": "successful_calls",
    "failure": "failed_calls",
    "ignored": "ignored_calls",
    "rejected": "rejected_calls",
}


async def scrape(http: aiohttp.ClientSession, url: str, accept: str = "") -> tuple[str, str]:
    """(content type, body) of ``GET /metrics``."""
    headers = {"Accept": accept} if accept else {}
    async with http.get(f"{url}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        return response.headers["Content-Type"], await response.text()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, have), v in found.items() if n == name and set(labels.items()) <= have)


def value(found: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    matching = [v for (n, have), v in found.items() if n == name and set(labels.items()) <= have]
    assert len(matching) == 1, f"{name}{labels}: {len(matching)} samples"
    return matching[0]


async def outage_cycle(harness: Harness, route: str = "solo") -> dict[str, Any]:
    """Open the route's primary breaker with upstream failures, get rejected while it is
    open, then recover through a probe.  Needs ``timeout_duration`` short (the harness
    config's failure_threshold 2, success_threshold 1).  Returns the breaker's final
    snapshot."""
    await harness.request("POST", f"/breakers/{harness.a}/reset", token=TOKEN)
    for _ in range(3):
        assert (await harness.chat(route))[0] == 200
    harness.simulator.control(api="openai", outage=True)
    for _ in range(2):
        assert (await harness.chat(route))[0] == 502
    assert (await harness.breaker(harness.a))["state"] == "open"
    for _ in range(2):
        assert (await harness.chat(route))[0] == 503
    harness.simulator.control(api="openai", outage=False)

    async def recovered() -> bool:
        status, _, _ = await harness.chat(route)
        return status == 200

    await wait_for(recovered)
    snapshot = await harness.breaker(harness.a)
    assert snapshot["state"] == "closed"
    return snapshot
