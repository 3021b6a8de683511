"""``[cluster]`` in the service config: the link joins at start (against the real Redis on
127.0.0.1:6379), shows in ``/health``, and leaves at shutdown so that breakers decide alone."""

from __future__ import annotations

import uuid

import aiohttp
import pytest
import redis.asyncio as redis

from actors.system import default_system
from service.config import ConfigError, parse_config
from tests.service.http.conftest import Harness, config_text, serving, wait_for

pytestmark = pytest.mark.anyio


async def test_service_joins_the_cluster_and_reports_the_link(
    tag: str, http: aiohttp.ClientSession
) -> None:
    namespace = f"breakerd-test-{uuid.uuid4().hex}"
    text = config_text(tag) + '\n[cluster]\nredis_url = "redis://127.0.0.1:6379/0"\n'
    text += f'namespace = "{namespace}"\n'
    config = parse_config(text, environ={})
    try:
        async with serving(config) as service:
            harness = Harness(service, tag, http)
            assert default_system().cluster is not None

            async def connected() -> bool:
                _, body, _ = await harness.request("GET", "/health")
                return bool(body.get("cluster", {}).get("status") == "connected")

            await wait_for(connected)
            status, body, _ = await harness.chat("chat")
            assert status == 200, body
        assert default_system().cluster is None  # detached on the way out
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = [key async for key in client.scan_iter(match=f"{namespace}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def test_cluster_section_is_validated_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.redis_url"):
        parse_config('[cluster]\nredis_url = ""\n', environ={})
    with pytest.raises(ConfigError, match=r"cluster\.counting"):
        parse_config("[cluster]\ncounting = true\n", environ={})
