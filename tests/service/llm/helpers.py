"""Shared test helpers: clients pointed at a fake provider, never at a real one."""

from __future__ import annotations

from typing import Any

from actors import ActorSystem
from service.llm_client import LLMClient, get_llm_client
from tests.service.llm.fake_provider import FakeProvider

KEY = "sk-test-0123456789-TOPSECRET"
BACKUP_KEY = "sk-ant-test-9876543210-ALSOSECRET"
HELLO = [{"role": "user", "content": "Hello"}]
WIRES = ("openai", "anthropic")


def base_url(fake: FakeProvider, provider: str) -> str:
    return fake.anthropic_base_url if provider == "anthropic" else fake.openai_base_url


def client_for(
    provider: str, fake: FakeProvider, system: ActorSystem | None, **options: Any
) -> LLMClient:
    """A client for ``provider`` served by ``fake``, its breakers in ``system``."""
    options.setdefault("api_key", KEY)
    return get_llm_client(provider, base_url=base_url(fake, provider), system=system, **options)


def backup_entry(fake: FakeProvider, provider: str = "anthropic") -> dict[str, Any]:
    """A ``fallback_providers`` entry served by ``fake``."""
    return {"provider": provider, "api_key": BACKUP_KEY, "base_url": base_url(fake, provider)}
