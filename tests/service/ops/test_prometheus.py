"""A real Prometheus (Debian's ``prometheus``; ``.ci/run`` installs it) scrapes the service
through an outage cycle; its query API then agrees with ``/breakers``.

Our own server, not the Debian package's service: a config pointing at the service's
ephemeral port, a 0.5 s scrape interval, storage in the test's temporary directory, and the web
API on a free loopback port.  Every wait has a deadline.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.service.http.conftest import TOKEN, Harness, wait_for
from tests.service.ops.metrics_helpers import OUTCOME_FIELDS, outage_cycle

pytestmark = pytest.mark.anyio

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def prometheus(quick: Harness, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping ``quick`` twice a second; yields its base URL."""
    target = quick.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 500ms
  scrape_timeout: 450ms
scrape_configs:
  - job_name: breakerd
    static_configs:
      - targets: ["{target}"]
""",
        encoding="utf-8",
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def scalar(http: aiohttp.ClientSession, base: str, promql: str) -> float | None:
    """The value of a one-series query, or None while Prometheus has no such series."""
    result = await query(http, base, promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def status_query(name: str, state: str) -> str:
    labels = f'circuit_breaker_name="{name}",circuit_breaker_state="{state}"'
    return f"circuit_breaker_status{{{labels}}}"


async def test_prometheus_sees_the_outage_and_agrees_with_breakers(
    quick: Harness, prometheus: str
) -> None:
    http, name = quick.http, quick.a

    async def ready() -> bool:
        try:
            async with http.get(f"{prometheus}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await wait_for(ready, timeout=30)

    async def scraped() -> bool:
        up = await scalar(http, prometheus, 'up{job="breakerd"}')
        return up == 1.0

    await wait_for(scraped, timeout=20)

    # While it is open, Prometheus sees the state gauge flip.
    await quick.request("POST", f"/breakers/{name}/open", token=TOKEN)
    open_gauge = status_query(name, "open")

    async def seen_open() -> bool:
        return await scalar(http, prometheus, open_gauge) == 1.0

    await wait_for(seen_open, timeout=15)

    snapshot = await outage_cycle(quick)  # resets first, so the counts start from zero
    expected = {outcome: float(snapshot[field]) for outcome, field in OUTCOME_FIELDS.items()}

    async def agrees() -> bool:
        result = await query(
            http, prometheus, f'circuit_breaker_calls_total{{circuit_breaker_name="{name}"}}'
        )
        seen = {
            series["metric"]["circuit_breaker_call_outcome"]: float(series["value"][1])
            for series in result
        }
        return seen == expected and await scalar(http, prometheus, open_gauge) == 0.0

    try:
        await wait_for(agrees, timeout=20)
    except TimeoutError:
        got = await query(http, prometheus, f'{{circuit_breaker_name="{name}"}}')
        pytest.fail(f"Prometheus never agreed with /breakers {expected}: {got}")
    assert await scalar(http, prometheus, status_query(name, "closed")) == 1.0
    assert expected["failure"] == 2.0 and expected["rejected"] >= 2.0
