"""Bounded load through fault phases of the simulator (driven through its ``/_control``):
every request is answered, and the breakers' counts add up to what the clients saw and to
what the upstream received."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest

from service.lifecycle import Service

pytestmark = pytest.mark.anyio

CLIENTS = 12
PHASE_SECONDS = 0.8
#: Statuses a client may see from the gateway; 500 (our own bug) never.
ANSWERS = {200, 429, 502, 503, 504}


@dataclass(frozen=True)
class Seen:
    """One request as its client saw it."""

    phase: str
    stream: bool
    status: int
    provider: str | None
    outcome: str  # "ok", or the error code (of the JSON answer, or of the stream's error event)


async def ask(http: aiohttp.ClientSession, url: str, phase: str, stream: bool) -> Seen:
    body = {"model": "chat", "messages": [{"role": "user", "content": phase}], "stream": stream}
    with anyio.fail_after(10):  # a guard: an answer may be an error, never a hang
        async with http.post(f"{url}/v1/chat/completions", json=body) as response:
            provider = response.headers.get("X-Breakerd-Provider")
            raw = await response.read()
    if response.status != 200 or not stream:
        document = json.loads(raw)  # every answer is JSON, errors included
        if response.status == 200:
            assert document["choices"][0]["message"]["content"], document
            return Seen(phase, stream, 200, provider, "ok")
        return Seen(phase, stream, response.status, provider, document["error"]["code"])
    events = [block for block in raw.decode().split("\n\n") if block.strip()]
    last = events[-1]
    if last == "data: [DONE]":
        return Seen(phase, stream, 200, provider, "ok")
    # A stream that cannot finish says why in its last event; it never just stops.
    data = json.loads(last.split("data: ", 1)[1])
    assert "error" in data, f"{phase}: the stream ended without [DONE] or an error: {last!r}"
    return Seen(phase, stream, 200, provider, str(data["error"].get("code") or "stream_error"))


RESET: dict[str, Any] = {"reset": True}  # both wire formats back to healthy
PHASES: list[tuple[str, dict[str, Any]]] = [
    ("healthy", {}),
    ("outage", {"api": "openai", "outage": True, "status": 503}),
    ("error_rate", {"api": "openai", "error_rate": 0.5, "status": 500}),
    ("latency", {"latency": 0.15}),
    ("truncation", {"api": "openai", "truncate_streams": True}),
    ("rate_limit", {"api": "openai", "outage": True, "status": 429, "retry_after": 1}),
    ("recovered", {}),
]


async def test_every_request_is_answered_and_the_counts_add_up(
    service: Service, http: aiohttp.ClientSession, tag: str
) -> None:
    simulator = service.simulator
    assert simulator is not None
    seen: list[Seen] = []

    async def client(index: int, phase: str, deadline: float) -> None:
        sent = 0
        while time.monotonic() < deadline:
            seen.append(await ask(http, service.url, phase, stream=(index + sent) % 4 == 0))
            sent += 1

    for phase, control in PHASES:
        for change in (RESET, control):
            async with http.post(f"{simulator.url}/_control", json=change) as response:
                assert response.status == 200, await response.text()
        deadline = time.monotonic() + PHASE_SECONDS
        async with anyio.create_task_group() as clients:
            for index in range(CLIENTS):
                clients.start_soon(client, index, phase, deadline)

    by_phase = {phase: [s for s in seen if s.phase == phase] for phase, _ in PHASES}
    report = {
        phase: Counter((s.status, s.provider, s.stream, s.outcome) for s in answers)
        for phase, answers in by_phase.items()
    }
    for phase, answers in by_phase.items():
        assert len(answers) >= CLIENTS, phase  # every client got answers in every phase
        assert {s.status for s in answers} <= ANSWERS, (phase, Counter(s.status for s in answers))
    a, b = f"{tag}a", f"{tag}b"
    # A healthy upstream answers everything itself; a failing primary has a fallback.
    assert {(s.status, s.provider) for s in by_phase["healthy"]} == {(200, a)}, report
    for phase in ("outage", "error_rate", "latency", "recovered"):
        assert {s.outcome for s in by_phase[phase]} == {"ok"}, (phase, report)
    assert {s.provider for s in by_phase["outage"]} >= {b}, report
    assert {s.outcome for s in by_phase["rate_limit"]} <= {"ok", "rate_limited"}, report
    truncated = {s.outcome for s in by_phase["truncation"] if s.stream and s.provider == a}
    assert "ok" not in truncated, report  # a stream cut short upstream is reported, not passed

    # The counts add up: to what the clients saw, and to what the upstream received.
    snapshots = {}
    for name in (a, b):
        async with http.get(f"{service.url}/breakers/{name}_client") as response:
            snapshots[name] = await response.json()
    for name, upstream in ((a, "openai"), (b, "anthropic")):
        m = snapshots[name]
        assert m["total_calls"] == (
            m["successful_calls"] + m["failed_calls"] + m["ignored_calls"] + m["rejected_calls"]
        ), m
        served = sum(1 for s in seen if s.outcome == "ok" and s.provider == name)
        assert m["successful_calls"] == served, (name, m, served)
        ran = m["successful_calls"] + m["failed_calls"] + m["ignored_calls"]
        assert simulator.apis[upstream].requests == ran, (name, m)
