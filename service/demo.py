"""``make demo`` / ``python -m service.demo``: a full outage cycle in under a minute.

It starts the service in-process with the upstream simulator, drives steady traffic at two
routes (one with a fallback provider, one without), makes the OpenAI-format upstream fail for
20 seconds through the simulator's ``POST /_control``, and keeps going until every breaker is
closed again.  Every second it prints one line: requests per second, their outcomes, and each
breaker's state.  At the end it prints the transitions (collected from ``GET /events``, as a
person would with ``curl -N``) and the health report (``GET /health``).

Everything goes through the service's HTTP API, so the demo is also a tour of it.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import msgspec

from service.config import parse_config
from service.lifecycle import Service

DEMO_CONFIG = """
[service]
port = 0
events_interval = 60.0

[breakers.default]
failure_threshold = 3
success_threshold = 2
timeout_duration = {timeout}
half_open_max_calls = 1

[providers.openai]
kind = "openai"
model = "gpt-4o-mini"
timeout = 5.0

[providers.anthropic]
kind = "anthropic"
model = "claude-3-5-haiku-latest"
timeout = 5.0

[routes."with-fallback"]
provider = "openai"
model = "gpt-4o-mini"
fallbacks = ["anthropic"]

[routes."no-fallback"]
provider = "openai"
model = "gpt-4o-mini"

[simulator]
mode = "on"
latency = 0.02
"""

OUTCOMES = ("ok", "fallback", "failed", "rejected", "other")
BREAKERS = ("openai_client", "anthropic_client")


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """The demo's schedule, in seconds; the defaults are ``make demo``'s."""

    warmup: float = 5.0
    outage: float = 20.0
    max_recovery: float = 25.0
    breaker_timeout: float = 4.0
    cooldown: float = 3.0
    request_interval: float = 0.2
    workers_per_route: int = 2
    tick: float = 1.0


#: ``--quick``: the same story in about ten seconds (a smoke test more than a show).
QUICK = Timeline(
    warmup=1.0,
    outage=3.0,
    max_recovery=10.0,
    breaker_timeout=0.5,
    cooldown=1.0,
    request_interval=0.05,
    tick=0.5,
)


class Demo:
    """Drives traffic, injects the outage, prints the view.  Runs on the service's loop."""

    def __init__(
        self,
        service: Service,
        http: aiohttp.ClientSession,
        timeline: Timeline,
        out: Callable[[str], None],
    ) -> None:
        self.service = service
        self.http = http
        self.timeline = timeline
        self.out = out
        self.counts: Counter[str] = Counter()
        self.transitions: list[dict[str, Any]] = []
        self.start = time.monotonic()
        self.start_wall = time.time()
        self.states = dict.fromkeys(BREAKERS, "closed")
        self.running = True

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    async def run(self) -> None:
        timeline = self.timeline
        simulator = self.service.simulator
        assert simulator is not None, "the demo config turns the simulator on"
        self.out(
            f"breakerd at {self.service.url}, upstream simulator at {simulator.url}\n"
            f"watch it live in a browser: {self.service.url}/dashboard\n"
            f"traffic: 'with-fallback' (openai, then anthropic) and 'no-fallback' (openai "
            f"alone); the openai upstream goes down at {timeline.warmup:g}s for "
            f"{timeline.outage:g}s\n"
        )
        self.out(self._header())
        async with anyio.create_task_group() as tasks:
            await tasks.start(self._follow_events)
            for route in ("with-fallback", "no-fallback"):
                for _ in range(timeline.workers_per_route):
                    tasks.start_soon(self._traffic, route)
            tasks.start_soon(self._outage, simulator.url)
            await self._report_until_recovered()
            self.running = False
            tasks.cancel_scope.cancel()
        await self._summary()

    # -- traffic -------------------------------------------------------------------------------

    async def _traffic(self, route: str) -> None:
        body = {"model": route, "messages": [{"role": "user", "content": "Are you there?"}]}
        url = f"{self.service.url}/v1/chat/completions"
        while self.running:
            async with self.http.post(url, json=body) as response:
                await response.read()
                self.counts[_outcome(response)] += 1
            await anyio.sleep(self.timeline.request_interval)

    async def _outage(self, simulator_url: str) -> None:
        await anyio.sleep(self.timeline.warmup)
        control = {"api": "openai", "outage": True, "duration": self.timeline.outage}
        async with self.http.post(f"{simulator_url}/_control", json=control) as response:
            response.raise_for_status()
        self.out(f"--- {self.elapsed():5.1f}s  outage: the openai upstream answers 503 ---")
        await anyio.sleep(self.timeline.outage)
        self.out(f"--- {self.elapsed():5.1f}s  the openai upstream is back ---")

    async def _follow_events(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Read ``GET /events`` and keep every state change, with its time."""
        async with self.http.get(f"{self.service.url}/events") as response:
            kind = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    if kind == "metrics":
                        task_status.started()  # subscribed: nothing will be missed
                    elif kind == "state_changed":
                        event = msgspec.json.decode(line[6:])
                        self.transitions.append(event)
                        self.states[event["breaker"]] = event["to_state"]

    # -- the view ------------------------------------------------------------------------------

    def _header(self) -> str:
        outcomes = "".join(f"{name:>9}" for name in OUTCOMES)
        breakers = "".join(f"  {name:<17}" for name in BREAKERS)
        return f"{'time':>6} {'rps':>4}{outcomes}{breakers}".rstrip()

    def _line(self, second: Counter[str], seconds: float) -> str:
        total = sum(second.values())
        outcomes = "".join(f"{second[name]:>9}" for name in OUTCOMES)
        states = "".join(f"  {_state(self.states[name]):<17}" for name in BREAKERS)
        return f"{self.elapsed():5.1f}s {total / seconds:4.0f}{outcomes}{states}".rstrip()

    async def _report_until_recovered(self) -> None:
        timeline = self.timeline
        outage_over = timeline.warmup + timeline.outage
        deadline = outage_over + timeline.max_recovery
        previous: Counter[str] = Counter()
        last = time.monotonic()
        recovered_at: float | None = None
        while True:
            await anyio.sleep(timeline.tick)
            now = time.monotonic()
            second = self.counts - previous
            previous = Counter(self.counts)
            self.out(self._line(second, now - last))
            last = now
            recovered = all(state == "closed" for state in self.states.values())
            if recovered_at is None and self.elapsed() >= outage_over and recovered:
                recovered_at = self.elapsed()
                self.out(f"--- {recovered_at:5.1f}s  every breaker is closed again ---")
            if recovered_at is not None and self.elapsed() >= recovered_at + timeline.cooldown:
                return
            if self.elapsed() >= deadline:
                self.out("(stopping: the breakers have not all closed yet)")
                return

    async def _summary(self) -> None:
        totals = ", ".join(f"{self.counts[name]} {name}" for name in OUTCOMES)
        self.out(f"\n{sum(self.counts.values())} requests: {totals}")
        self.out("\nTransitions (from GET /events):")
        for event in self.transitions:
            at = event["at"]
            clock = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
            self.out(
                f"  {clock} {at - self.start_wall:+6.1f}s  {event['breaker']:<17} "
                f"{event['from_state']:>9} -> {event['to_state']:<9}  ({event['reason']})"
            )
        async with self.http.get(f"{self.service.url}/health") as response:
            health = await response.json()
        self.out(f"\nHealth report (GET /health -> {response.status}): {health['overall_health']}")
        for name in BREAKERS:
            entry = health["circuit_breakers"][name]
            self.out(
                f"  {name:<17} {entry['state']:<9} {entry['status']:<9} "
                f"failure rate {entry['failure_rate']:.1%}"
            )


def _outcome(response: aiohttp.ClientResponse) -> str:
    if response.status == 200:
        provider = response.headers.get("X-Breakerd-Provider")
        return "ok" if provider == "openai" else "fallback"
    if response.status == 503:
        return "rejected"  # the breaker answered: no upstream call was made
    if response.status in (502, 504):
        return "failed"  # the upstream was called and failed
    return "other"


def _state(state: str) -> str:
    return {"open": "OPEN", "half_open": "half-open"}.get(state, state)


async def run_demo(timeline: Timeline | None = None, out: Callable[[str], None] = print) -> Demo:
    """Run the whole demo; returns it (its counts and transitions) when done."""
    timeline = timeline or Timeline()
    config = parse_config(
        DEMO_CONFIG.format(timeout=timeline.breaker_timeout), source="<demo>", environ={}
    )
    async with anyio.create_task_group() as task_group:
        service: Service = await task_group.start(
            lambda task_status: Service(config, environ={}).run(task_status=task_status)
        )
        try:
            async with aiohttp.ClientSession() as http:
                demo = Demo(service, http, timeline, out)
                await demo.run()
        finally:
            service.stop()
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.demo",
        description="Run breakerd against its simulator through a 20-second outage.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the same cycle compressed into about ten seconds"
    )
    args = parser.parse_args(argv)
    # The live view is the output: the service's own log would only interleave with it.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    timeline = QUICK if args.quick else Timeline()
    try:
        anyio.run(run_demo, timeline)
    except KeyboardInterrupt:
        print("\ninterrupted")


if __name__ == "__main__":
    main()
