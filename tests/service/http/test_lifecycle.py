"""Start and stop: in-flight requests finish, shutdown is bounded, signals work, telemetry
flushes, and the simulator stands in when there is no key."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from service.config import ServiceConfig, parse_config
from service.gateway import resolve_providers
from service.lifecycle import ListenError, Service

from .conftest import Harness, config_text, serving, wait_for

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


async def test_in_flight_requests_finish_during_a_graceful_shutdown(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag), environ={})
    answers: list[tuple[int, str]] = []

    async def complete(harness: Harness) -> None:
        status, body, _ = await harness.chat("chat", "finish me")
        answers.append((status, body["choices"][0]["message"]["content"]))

    async def stream(harness: Harness) -> None:
        body = {"model": "solo", "messages": [{"role": "user", "content": "s"}], "stream": True}
        async with http.post(f"{harness.url}/v1/chat/completions", json=body) as response:
            answers.append((response.status, (await response.read()).decode()))

    async with serving(config) as service:
        harness = Harness(service, tag, http)
        harness.simulator.control(latency=0.5)
        async with anyio.create_task_group() as clients:
            for _ in range(4):
                clients.start_soon(complete, harness)
            clients.start_soon(stream, harness)
            await wait_for(lambda: harness.simulator.apis["openai"].in_flight == 5)
            service.stop()
    assert len(answers) == 5
    for status, text in answers:
        assert status == 200
        assert "Simulated openai reply to:" in text or "data: [DONE]" in text
    with pytest.raises(aiohttp.ClientConnectorError):  # no longer listening
        await http.get(f"{service.url}/health")


async def test_shutdown_is_bounded_by_the_grace_period(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag, shutdown_grace=0.3), environ={})
    outcome: list[int] = []

    async def hang(url: str) -> None:
        async with http.post(
            f"{url}/v1/chat/completions",
            json={"model": "solo", "messages": [{"role": "user", "content": "x"}]},
        ) as response:
            outcome.append(response.status)

    with anyio.fail_after(20):  # a guard against hanging, not a speed bar
        async with serving(config) as service:
            simulator = service.simulator
            assert simulator is not None
            simulator.control(latency=60)
            async with anyio.create_task_group() as clients:
                clients.start_soon(hang, service.url)
                await wait_for(lambda: simulator.apis["openai"].in_flight == 1)
                service.stop()
    assert outcome == [503]  # cut (cleanly) at the grace period, and shutdown completed


async def test_a_port_in_use_is_a_listen_error_and_leaves_nothing_running(tag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(config_text(tag), environ={"BREAKERD_PORT": str(port)})
        service = Service(config, environ={})
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            await service.run()
    assert service.simulator is not None
    assert service.simulator._runner is None  # stopped again


def test_the_simulator_stands_in_only_without_keys() -> None:
    config = parse_config(
        config_text("r") + '[providers.local]\nkind = "openai_compatible"\n'
        'model = "m"\nbase_url = "http://127.0.0.1:1/v1"\n',
        environ={},
    )
    auto = msgspec_replace_mode(config, "auto")
    _, simulated = resolve_providers(auto, {})
    assert simulated == ["ra", "rb", "rslow"]  # the key-less local server stays put
    targets, simulated = resolve_providers(auto, {"OPENAI_API_KEY": "sk-test"})
    assert simulated == []
    assert targets["ra"].api_key == "sk-test"
    assert "sk-test" not in repr(targets["ra"])
    _, simulated = resolve_providers(msgspec_replace_mode(config, "off"), {})
    assert simulated == []
    _, simulated = resolve_providers(msgspec_replace_mode(config, "on"), {"OPENAI_API_KEY": "k"})
    assert simulated == ["ra", "rb", "rslow", "local"]


def msgspec_replace_mode(config: ServiceConfig, mode: str) -> ServiceConfig:
    return msgspec.structs.replace(
        config, simulator=msgspec.structs.replace(config.simulator, mode=mode)
    )


# -- the real command line ---------------------------------------------------------------------


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, dict[str, list[bytes]]]]:
    """An OTLP/HTTP receiver on 127.0.0.1 that keeps every request body by signal path."""
    received: dict[str, list[bytes]] = {"/v1/metrics": [], "/v1/traces": []}

    async def accept(request: web.Request) -> web.Response:
        received[request.path].append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", accept)
    app.router.add_post("/v1/traces", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


def clean_environment(**extra: str) -> dict[str, str]:
    drop = ("BREAKERD_", "OTEL_", "OPENAI_", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


async def test_python_m_service_serves_stops_on_sigterm_and_flushes_telemetry(
    http: aiohttp.ClientSession,
) -> None:
    async with otlp_receiver() as (endpoint, received):
        env = clean_environment(
            BREAKERD_TELEMETRY="true",
            BREAKERD_ADMIN_TOKEN="tok-0123456789abcdef",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_METRIC_EXPORT_INTERVAL="600000",  # only the shutdown flush exports
        )
        log: list[str] = []
        listening = anyio.Event()
        with anyio.fail_after(60):
            process = await anyio.open_process(
                [sys.executable, "-m", "service", "--port", "0"], cwd=ROOT, env=env
            )
            async with process, anyio.create_task_group() as readers:

                async def read_log() -> None:
                    assert process.stderr is not None
                    buffered = ""
                    async for chunk in process.stderr:
                        buffered += chunk.decode()
                        *lines, buffered = buffered.split("\n")
                        log.extend(lines)
                        if any("listening on" in line for line in lines):
                            listening.set()

                readers.start_soon(read_log)
                await listening.wait()
                url = re.search(r"listening on (http://\S+)", "\n".join(log))
                assert url is not None
                base = url.group(1)
                async with http.get(f"{base}/health") as response:
                    assert response.status == 200
                chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                async with http.post(f"{base}/v1/chat/completions", json=chat) as response:
                    assert response.status == 200
                auth = {"Authorization": "Bearer tok-0123456789abcdef"}
                for action in ("open", "reset"):  # one outage span
                    async with http.post(
                        f"{base}/breakers/openai_client/{action}", headers=auth
                    ) as response:
                        assert response.status == 200
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
    text = "\n".join(log)
    assert "no provider API key is set (ANTHROPIC_API_KEY, OPENAI_API_KEY)" in text
    assert "served by the built-in upstream simulator" in text
    assert "SIGTERM received: shutting down gracefully" in text
    assert "breakerd stopped" in text
    assert "Traceback" not in text

    scopes = set()
    for body in received["/v1/metrics"]:
        export = ExportMetricsServiceRequest.FromString(body)
        for resource in export.resource_metrics:
            for scope in resource.scope_metrics:
                scopes.add(scope.scope.name)
    assert "breakerd" in scopes
    spans = [
        span.name
        for body in received["/v1/traces"]
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert "circuit_breaker.open" in spans


def test_the_demo_runs_a_full_outage_cycle() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.demo", "--quick"],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "outage: the openai upstream answers 503" in out
    assert re.search(r"watch it live in a browser: http://127\.0\.0\.1:\d+/dashboard", out)
    assert "every breaker is closed again" in out
    transitions = re.findall(r"openai_client +(\w+) -> (\w+) +\((\w+)\)", out)
    assert transitions[0] == ("closed", "open", "failure_threshold")
    assert transitions[-1] == ("half_open", "closed", "probes_succeeded")
    assert "Health report (GET /health -> 200): healthy" in out
    assert " fallback" in out and "rejected" in out
