"""The chaos suite: the real service, in-process, on an ephemeral port, with its simulator as
the upstream and each test's providers named apart (fresh breakers in the process-wide
registry).  Routes: ``chat`` (``<tag>a``, OpenAI format, falling back to ``<tag>b``, Anthropic
format) and ``solo`` (``<tag>a`` alone)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest

from service.circuit_breaker import remove_circuit_breaker
from service.config import parse_config
from service.lifecycle import Service
from tests.service.http.conftest import serving

_tags = itertools.count()


def chaos_config(tag: str) -> str:
    # Short breaks, so that the breakers open and close again within a one-second phase.
    return f"""
[service]
port = 0
shutdown_grace = 2.0

[breakers.default]
failure_threshold = 3
success_threshold = 1
timeout_duration = 0.3
half_open_max_calls = 1

[providers.{tag}a]
kind = "openai"
model = "model-a"
timeout = 2.0

[providers.{tag}b]
kind = "anthropic"
model = "model-b"
timeout = 2.0

[routes.chat]
provider = "{tag}a"
fallbacks = ["{tag}b"]

[routes.solo]
provider = "{tag}a"

[simulator]
mode = "on"
latency = 0.0
"""


@pytest.fixture
def tag() -> str:
    return f"c{next(_tags)}x"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
async def service(tag: str) -> AsyncIterator[Service]:
    try:
        async with serving(parse_config(chaos_config(tag), environ={})) as running:
            yield running
    finally:
        # The registry is process-wide: breakers left open here would make the health of
        # every later test degraded.
        for provider in ("a", "b"):
            remove_circuit_breaker(f"{tag}{provider}_client")
