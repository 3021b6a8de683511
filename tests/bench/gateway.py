"""Rows 9*: the LLM gateway's cost, measured in processes of their own.

Three processes: the bare upstream (``tests.bench.gateway_upstream``, canned answers), breakerd
(``python -m service``, one OpenAI-wire provider pointing at that upstream), and this worker,
which drives the load with an aiohttp client and is never measured.  CPU is read from
``/proc/<pid>/task/*/schedstat`` (time on a CPU of the measured server process), so each figure is
attributable to one process: the bare upstream's CPU when called directly, and the gateway's
own CPU when called through it (the upstream's share of that run is not counted).

A second breakerd runs with its access log and Prometheus ``/metrics`` off, to show what the
core request path costs apart from them.  Each round measures the bare upstream and that lean
gateway, each followed at once by breakerd as configured by default (the harness's paired,
interleaved rounds), at c=1 and c=64 for plain requests and at c=16 for streams.  Rows:

- CPU per 1,000 requests; bar (issue 12): the gateway's at most 3.0x the bare upstream's
  (checked for both gateways).
- Added latency: the gateway's p50 (and p99) minus the bare upstream's, in the same round.

LiteLLM's proxy would be the third contestant; it is measured only when ``litellm`` is
importable (it is not a dependency), otherwise its column says "not installed".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.harness import (
    Check,
    Contestant,
    Round,
    Row,
    build_row,
    median,
    pair_key,
    progress,
    ratio,
    run_rounds_by_metric,
)

BARE = "no breaker"  # the report's reference column: here, the bare upstream
GATEWAY = "breakerd"
LEAN = "breakerd, access log and /metrics off"
LEAN_CONFIG = """
[logging]
access_log = false

[metrics]
prometheus = false
"""
ROWS = ["9a", "9b", "9c", "9d", "9e", "9f"]
"""The keys of the rows, in table order: (CPU, latency) at c=1, at c=64, for streams."""
CPU_BAR = 3.0
ROOT = Path(__file__).resolve().parents[2]
_TICKS = os.sysconf("SC_CLK_TCK")
_BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say ten words."}]}


def litellm_note() -> str:
    return "installed, not wired in" if importlib.util.find_spec("litellm") else "not installed"


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``, all its threads: from ``schedstat`` (nanoseconds on a
    CPU) where the kernel keeps it, else from ``stat`` (user + system, in clock ticks: 10 ms
    steps, too coarse for short runs)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        return (
            sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9
        )
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gateway_config(upstream: str, port: int) -> str:
    return f"""
[service]
host = "127.0.0.1"
port = {port}

[providers.bench]
kind = "openai"
model = "bench-model"
base_url = "{upstream}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[routes.bench]
provider = "bench"

[simulator]
mode = "off"
"""


@contextlib.contextmanager
def server(
    command: list[str], url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Run ``command`` until the block ends; yields its pid once ``url`` answers HTTP.  Its
    output goes to ``log``, whose end is shown when the block fails."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        asyncio.run(_wait_until_serving(url, process))
        yield process.pid
    except BaseException:
        progress(f"{command[2]} output (end):\n" + log.read_text(errors="replace")[-3000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the server exited with {process.returncode}")
            try:
                async with session.get(url) as response:
                    await response.read()
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url}: not serving after 30 s")


@dataclass(frozen=True)
class Load:
    cpu_key: str
    latency_key: str
    title: str
    concurrency: int
    requests: int
    stream: bool


class Driver:
    """Sends one load at a URL and reports the measured process's CPU and the latencies."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.session = runner.run(self._session())

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def close(self) -> None:
        self.runner.run(self.session.close())

    def measure(self, url: str, pid: int, load: Load) -> dict[str, float]:
        before = cpu_seconds(pid)
        latencies = self.runner.run(self._drive(url, load))
        spent = cpu_seconds(pid) - before
        latencies.sort()
        return {
            "cpu": spent * 1e6 / load.requests,  # ms of CPU per 1,000 requests
            "p50": latencies[len(latencies) // 2] * 1e6,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
        }

    async def _drive(self, url: str, load: Load) -> list[float]:
        body = {**_BODY, "stream": True} if load.stream else _BODY
        remaining = iter(range(load.requests))
        latencies: list[float] = []

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                async with self.session.post(url, json=body) as response:
                    await response.read()  # a stream: to its end
                    if response.status != 200:
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
        return latencies


def loads(quick: bool) -> list[Load]:
    def size(full: int, small: int) -> int:
        return small if quick else full

    return [
        Load("9a", "9b", "LLM gateway, c=1", 1, size(400, 100), False),
        Load("9c", "9d", "LLM gateway, c=64", 64, size(3000, 600), False),
        Load("9e", "9f", "LLM gateway, streams, c=16", 16, size(1000, 200), True),
    ]


def group_gateway(settings: Any) -> list[Row]:
    """The gateway rows (see the module docstring)."""
    note = litellm_note()
    progress(f"LiteLLM: {note}")
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        command = [sys.executable, "-m", "tests.bench.gateway_upstream", "--port"]
        upstream_pid = stack.enter_context(
            server([*command, str(upstream_port)], upstream, Path(folder) / "upstream.log")
        )
        gateways: dict[str, tuple[str, int]] = {}
        for name, extra in ((GATEWAY, ""), (LEAN, LEAN_CONFIG)):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            config = Path(folder) / f"gateway-{len(gateways)}.toml"
            config.write_text(gateway_config(upstream, port) + extra)
            command = [sys.executable, "-m", "service", "--config", str(config)]
            log = Path(folder) / f"gateway-{len(gateways)}.log"
            pid = stack.enter_context(server(command, url, log, {"BENCH_UPSTREAM_KEY": "sk-b"}))
            gateways[name] = (url, pid)
        runner = stack.enter_context(asyncio.Runner())
        driver = Driver(runner)
        stack.callback(driver.close)
        rows: list[Row] = []
        for load in loads(settings.quick):

            def contestant(name: str, url: str, pid: int, load: Load = load) -> Contestant:
                return Contestant(
                    name, lambda: driver.measure(f"{url}/v1/chat/completions", pid, load)
                )

            bare = contestant(BARE, upstream, upstream_pid)
            subject = contestant(GATEWAY, *gateways[GATEWAY])
            lean = contestant(LEAN, *gateways[LEAN])
            for warm in (subject, lean):  # connections, first-use costs
                warm.measure()
            rounds = run_rounds_by_metric(
                subject, [bare, lean], settings.rounds, load.title, ["cpu", "p50", "p99"]
            )
            rows += [cpu_row(load, rounds["cpu"], note), latency_row(load, rounds)]
    return rows


def _own(one: Round, name: str) -> float:
    return one[name]


def cpu_row(load: Load, rounds: list[Round], note: str) -> Row:
    return build_row(
        key=load.cpu_key,
        title=f"{load.title}: server CPU per 1,000 requests (no breaker = the bare upstream; "
        f"LiteLLM: {note})",
        unit="ms CPU",
        rounds=rounds,
        figure=_own,
        subject=GATEWAY,
        peers=[],
        reference=BARE,
        shown=[LEAN],
        bar=f"gateway <= {CPU_BAR:g}x bare upstream",
        checks=[
            Check(
                "gateway / upstream",
                lambda one: ratio(one[pair_key(GATEWAY, BARE)], one[BARE]),
                CPU_BAR,
            ),
            Check("lean gateway / upstream", lambda one: ratio(one[LEAN], one[BARE]), CPU_BAR),
        ],
        notes={},
    )


def latency_row(load: Load, rounds: dict[str, list[Round]]) -> Row:
    def added(metric: str, name: str = pair_key(GATEWAY, BARE)) -> float:
        return median([one[name] - one[BARE] for one in rounds[metric]])

    return Row(
        key=load.latency_key,
        title=f"{load.title}: latency added by the gateway, p50 (no breaker = the bare "
        "upstream's p50)",
        unit="us",
        figures={
            BARE: median([one[BARE] for one in rounds["p50"]]),
            GATEWAY: added("p50"),
            "added at p99": added("p99"),
            "bare p99": median([one[BARE] for one in rounds["p99"]]),
            f"{LEAN}, added at p50": added("p50", LEAN),
        },
        best_peer_ratio=None,
        bar="reported",
        checks=[],
        passed=None,
        rounds=rounds["p50"],
    )
