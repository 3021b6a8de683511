"""Fixtures for the LLM client tests: a fake provider on 127.0.0.1, a manual-clock actor system,
and an environment with no provider variables (so that no test can reach a real provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors import ActorSystem, ManualClock
from tests.service.llm.fake_provider import FakeProvider

PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_COMPATIBLE_API_KEY",
    "OPENAI_COMPATIBLE_BASE_URL",
)


@pytest.fixture(autouse=True)
def _no_provider_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as server:
        yield server


@pytest.fixture
async def backup() -> AsyncIterator[FakeProvider]:
    """A second provider, for fallback chains."""
    async with FakeProvider(reply="Hello from the backup") as server:
        yield server


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    """Breakers for one test, on the manual clock (the process-wide registry stays clean)."""
    async with ActorSystem(clock=clock) as actor_system:
        yield actor_system
