"""The real service, in-process, on an ephemeral port, with its simulator as the upstream.

Each test gets providers of its own (``<tag>a``: OpenAI format, ``<tag>b``: Anthropic format),
so their breakers (``<tag>a_client``...) are fresh in the process-wide registry.  Routes:
``chat`` (a, falling back to b) and ``solo`` (a alone).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest

from service.config import ServiceConfig, parse_config
from service.lifecycle import Service
from service.simulator import Simulator

TOKEN = "test-admin-token-0123456789"
_tags = itertools.count()


def config_text(
    tag: str, *, timeout_duration: float = 30.0, shutdown_grace: float = 5.0, service: str = ""
) -> str:
    return f"""
[service]
port = 0
shutdown_grace = {shutdown_grace}
events_interval = 0.5
{service}

[breakers.default]
failure_threshold = 2
success_threshold = 1
timeout_duration = {timeout_duration}
half_open_max_calls = 1

[providers.{tag}a]
kind = "openai"
model = "model-a"

[providers.{tag}b]
kind = "anthropic"
model = "model-b"

[providers.{tag}slow]
kind = "openai"
model = "model-slow"
timeout = 0.3

[routes.chat]
provider = "{tag}a"
fallbacks = ["{tag}b"]

[routes.solo]
provider = "{tag}a"

[routes.slow]
provider = "{tag}slow"

[simulator]
mode = "on"
latency = 0.0
"""


class Harness:
    """A started service and the names its test uses."""

    def __init__(self, service: Service, tag: str, http: aiohttp.ClientSession) -> None:
        self.service = service
        self.tag = tag
        self.http = http
        self.a = f"{tag}a_client"
        self.b = f"{tag}b_client"

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def simulator(self) -> Simulator:
        assert self.service.simulator is not None
        return self.service.simulator

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        """(status, decoded JSON body, headers)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.url + path, json=json, data=data, headers=all_headers
        ) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json(), response.headers

    async def chat(self, model: str, text: str = "hello", **fields: Any) -> tuple[int, Any, Any]:
        body = {"model": model, "messages": [{"role": "user", "content": text}], **fields}
        return await self.request("POST", "/v1/chat/completions", json=body)

    async def breaker(self, name: str) -> dict[str, Any]:
        status, body, _ = await self.request("GET", f"/breakers/{name}")
        assert status == 200, body
        return dict(body)


StartService = Callable[..., Any]


@pytest.fixture
def tag() -> str:
    return f"t{next(_tags)}x"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@asynccontextmanager
async def serving(
    config: ServiceConfig, environ: dict[str, str] | None = None
) -> AsyncIterator[Service]:
    """Run the service in a task group; stop it (gracefully) on the way out."""
    async with anyio.create_task_group() as task_group:
        service: Service = await task_group.start(
            lambda task_status: Service(config, environ=environ or {}).run(task_status=task_status)
        )
        try:
            yield service
        finally:
            service.stop()


@pytest.fixture
async def harness(tag: str, http: aiohttp.ClientSession) -> AsyncIterator[Harness]:
    """The service with the admin token set and the default test config."""
    config = parse_config(config_text(tag), environ={})
    async with serving(config, {"BREAKERD_ADMIN_TOKEN": TOKEN}) as service:
        yield Harness(service, tag, http)


async def wait_for(condition: Callable[[], Any], *, timeout: float = 10.0) -> None:
    """Poll an observable condition (sync or async) until it holds, or fail after
    ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            result = condition()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)
