"""The in-process service fixtures of tests/service/http, shared with the operations tests,
and ``quick``: the same service with breakers that probe 0.2 s after opening."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from service.config import parse_config
from tests.service.http.conftest import TOKEN, Harness, config_text, harness, http, serving, tag

__all__ = ["harness", "http", "quick", "tag"]


@pytest.fixture
async def quick(tag: str, http: aiohttp.ClientSession) -> AsyncIterator[Harness]:
    config = parse_config(config_text(tag, timeout_duration=0.2), environ={})
    async with serving(config, {"BREAKERD_ADMIN_TOKEN": TOKEN}) as service:
        yield Harness(service, tag, http)
