"""Which upstreams the gateway calls: the configured providers, resolved against the
environment, and whether the built-in simulator stands in for them."""

from __future__ import annotations

from collections.abc import Mapping

from service.config import ServiceConfig
from service.llm.settings import KINDS
from service.simulator import Api, Simulator


class ProviderTarget:
    """One configured provider, resolved against the environment.  Its repr hides the key."""

    __slots__ = ("api_key", "base_url", "key_env", "name", "section_kind", "simulated", "table")

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        key_env: str,
        api_key: str | None,
        base_url: str | None,
        table: str,
        simulated: bool = False,
    ) -> None:
        self.name = name
        self.section_kind = kind
        self.key_env = key_env
        self.api_key = api_key
        self.base_url = base_url
        self.table = table
        self.simulated = simulated

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        where = "simulator" if self.simulated else (self.base_url or "default URL")
        return f"<ProviderTarget {self.name!r} {self.section_kind} key={key} at={where}>"

    @property
    def needs_key(self) -> bool:
        return KINDS[self.section_kind].key_required

    @property
    def usable(self) -> bool:
        """Whether calls can be made (the key, if the kind needs one, is there)."""
        return bool(self.api_key) or not self.needs_key

    def at_simulator(self, simulator: Simulator) -> ProviderTarget:
        """This provider served by ``simulator``, in its wire format."""
        api: Api = "anthropic" if self.section_kind == "anthropic" else "openai"
        return ProviderTarget(
            self.name,
            self.section_kind,
            key_env=self.key_env,
            api_key="simulator",
            base_url=simulator.base_url(api),
            table=self.table,
            simulated=True,
        )


def resolve_providers(
    config: ServiceConfig, environ: Mapping[str, str]
) -> tuple[dict[str, ProviderTarget], list[str]]:
    """Every provider with its key from ``environ``, and the names of those the simulator
    must serve.

    ``simulator.mode``: ``on``: all of them; ``off``: none; ``auto``: when no provider has a
    key, those that need one (a key-less local server, ``openai_compatible``, stays put).
    """
    targets: dict[str, ProviderTarget] = {}
    for name, section in config.providers.items():
        key_env = section.api_key_env or KINDS[section.kind].key_env
        targets[name] = ProviderTarget(
            name,
            section.kind,
            key_env=key_env,
            api_key=environ.get(key_env) or None,
            base_url=section.base_url,
            table=config.provider_breaker(name),
        )
    mode = config.simulator.mode
    if mode == "on":
        return targets, list(targets)
    if mode == "auto" and not any(target.api_key for target in targets.values()):
        return targets, [name for name, target in targets.items() if target.needs_key]
    return targets, []
