"""The gateway's edges: a client that leaves, a saturated connection pool, endpoints a route
cannot serve, and errors in the shape of the API that was called."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

from service.config import parse_config
from service.lifecycle import Service
from tests.service.llm.fake_provider import FakeProvider, Fault

from .conftest import serving, wait_for

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "hi"}]


def config_text(tag: str, fake: FakeProvider) -> str:
    return f"""
[service]
port = 0

[breakers.default]
failure_threshold = 2
timeout_duration = 30.0
half_open_max_calls = 1

[providers.{tag}up]
kind = "openai"
model = "up-model"
base_url = "{fake.openai_base_url}"
api_key_env = "FAKE_KEY"
pool_size = 1
pool_timeout = 0.05

[providers.{tag}claude]
kind = "anthropic"
model = "claude-model"
base_url = "{fake.anthropic_base_url}"
api_key_env = "FAKE_KEY"

[routes.up]
provider = "{tag}up"

[routes.up-again]
provider = "{tag}up"

[routes.claude-only]
provider = "{tag}claude"

[simulator]
mode = "off"
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as server:
        yield server


@pytest.fixture
async def service(tag: str, fake: FakeProvider) -> AsyncIterator[Service]:
    config = parse_config(config_text(tag, fake), environ={})
    async with serving(config, {"FAKE_KEY": "sk-fake-key-for-tests"}) as running:
        yield running


async def breaker(http: aiohttp.ClientSession, url: str, name: str) -> dict[str, Any]:
    async with http.get(f"{url}/breakers/{name}") as response:
        return dict(await response.json())


async def test_a_client_that_leaves_cancels_the_upstream_call(
    service: Service,
    fake: FakeProvider,
    tag: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 13 #5: the upstream call ends with the client, counted as ignored."""
    fake.inject(Fault.hang())  # never answers until released
    body = {"model": "up", "messages": HELLO}
    caplog.set_level(logging.INFO, logger="service.gateway")
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{service.url}/v1/chat/completions",
            json=body,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    name = f"{tag}up_client"

    async def counted() -> bool:
        return (await breaker(http, service.url, name))["ignored_calls"] == 1

    await wait_for(counted, timeout=5.0)  # a call still running would not be counted yet
    snapshot = await breaker(http, service.url, name)
    assert (snapshot["failed_calls"], snapshot["successful_calls"]) == (0, 0)
    assert any(
        record.levelno == logging.INFO and "left" in record.getMessage()
        for record in caplog.records
    )
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_saturated_pool_is_a_503_to_retry_and_no_breaker_failure(
    service: Service, fake: FakeProvider, tag: str, http: aiohttp.ClientSession
) -> None:
    """Issue 13 #1: the provider's one connection is busy; the wait for it is bounded."""
    fake.inject(Fault.hang())
    body = {"model": "up", "messages": HELLO}
    url = f"{service.url}/v1/chat/completions"
    statuses: list[int] = []

    async def first() -> None:
        async with http.post(url, json=body) as response:
            statuses.append(response.status)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await wait_for(lambda: fake.count == 1)
        async with http.post(url, json=body) as response:
            answer = await response.json()
        fake.release()
    assert response.status == 503
    assert response.headers["x-should-retry"] == "true"
    assert answer["error"]["code"] == "provider_saturated"
    assert statuses == [200]
    snapshot = await breaker(http, service.url, f"{tag}up_client")
    assert (snapshot["failed_calls"], snapshot["successful_calls"]) == (0, 1)
    assert fake.count == 1


async def test_routes_to_one_provider_share_its_pool(
    service: Service, fake: FakeProvider, tag: str, http: aiohttp.ClientSession
) -> None:
    """pool_size bounds the provider's connections, whichever route the requests came by."""
    fake.inject(Fault.hang())
    url = f"{service.url}/v1/chat/completions"
    statuses: list[int] = []

    async def first() -> None:
        async with http.post(url, json={"model": "up", "messages": HELLO}) as response:
            statuses.append(response.status)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await wait_for(lambda: fake.count == 1)
        async with http.post(url, json={"model": "up-again", "messages": HELLO}) as response:
            answer = await response.json()
        fake.release()
    assert response.status == 503
    assert answer["error"]["code"] == "provider_saturated"
    assert statuses == [200]
    assert fake.count == 1


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/embeddings", {"model": "claude-only", "input": "x"}, "serves embeddings"),
        ("/v1/messages/count_tokens", {"model": "up", "messages": HELLO}, "not an Anthropic"),
        ("/v1/chat/completions", {"model": "up", "messages": "hi"}, "messages: expected an"),
        ("/v1/chat/completions", {"model": "up", "messages": HELLO, "stream": 1}, "stream"),
        ("/v1/chat/completions", {"messages": HELLO}, "model: required"),
    ],
)
async def test_what_a_route_cannot_serve_is_a_clear_400(
    service: Service,
    fake: FakeProvider,
    http: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
    message: str,
) -> None:
    async with http.post(f"{service.url}{path}", json=body) as response:
        answer = await response.json()
    assert response.status == 400
    error = answer["error"]
    assert message in error["message"]
    assert fake.count == 0


async def test_messages_errors_come_in_anthropics_shape(
    service: Service, fake: FakeProvider, http: aiohttp.ClientSession
) -> None:
    body = {"model": "nope", "max_tokens": 10, "messages": HELLO}
    async with http.post(f"{service.url}/v1/messages", json=body) as response:
        answer = await response.json()
    assert response.status == 404
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "not_found_error"
    assert "nope" in answer["error"]["message"]


async def test_models_list_the_routes_and_name_an_unknown_one(
    service: Service, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{service.url}/v1/models") as response:
        listed = await response.json()
    assert [model["id"] for model in listed["data"]] == ["claude-only", "up", "up-again"]
    assert listed["object"] == "list"
    async with http.get(f"{service.url}/v1/models/up") as response:
        assert (await response.json())["id"] == "up"
    async with http.get(f"{service.url}/v1/models/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "model_not_found"
