"""The official SDKs against the in-process gateway, its simulator as the upstream.

Each test gets a service of its own (fresh breakers) with two providers, ``<tag>a`` (OpenAI
wire) and ``<tag>b`` (Anthropic wire), and these routes:

- ``gpt``: a (as model ``gpt-upstream``), falling back to b (an OpenAI route with an Anthropic
  fallback);
- ``claude``: b, falling back to a (an Anthropic route with an OpenAI fallback);
- ``solo``: a alone (for rate limits and open breakers with nowhere to go);
- ``haiku``: b alone (an Anthropic route with no OpenAI-wire provider).

The ``path`` fixture runs each test twice: once as is (``primary``), once with the route's
primary down (``fallback``: the simulator fails every call of that wire format), so that the
answer must cross formats.  ``path.served(route)`` says which wire format answers.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import pytest

from service.config import parse_config
from service.simulator import Simulator
from tests.service.http.conftest import TOKEN, Harness, http, serving

__all__ = ["http"]  # a fixture of the HTTP tests, shared here

Wire = Literal["openai", "anthropic"]
API_KEY = "sk-test-key-0123456789"

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_ARGS = {"city": "sim-city", "unit": "celsius"}
OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    }
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Weather", "input_schema": WEATHER}
]
CLOCK: dict[str, Any] = {"type": "object", "properties": {"zone": {"type": "string"}}}
CLOCK_ARGS = {"zone": "sim-zone"}
OPENAI_CLOCK: Any = {"type": "function", "function": {"name": "get_time", "parameters": CLOCK}}
ANTHROPIC_CLOCK: Any = {"name": "get_time", "input_schema": CLOCK}
PARALLEL = "both tools, in parallel"  # the simulator then calls every tool offered
PRIMARY: dict[str, Wire] = {"gpt": "openai", "claude": "anthropic", "solo": "openai"}
OTHER: dict[Wire, Wire] = {"openai": "anthropic", "anthropic": "openai"}


_tags = itertools.count()


@pytest.fixture
def tag() -> str:
    return f"sdk{next(_tags)}x"


def config_text(tag: str) -> str:
    return f"""
[service]
port = 0

[breakers.default]
failure_threshold = 2
success_threshold = 1
timeout_duration = 30.0
half_open_max_calls = 1

[providers.{tag}a]
kind = "openai"
model = "upstream-gpt"

[providers.{tag}b]
kind = "anthropic"
model = "upstream-claude"

[routes.gpt]
provider = "{tag}a"
model = "gpt-upstream"
fallbacks = ["{tag}b"]

[routes.claude]
provider = "{tag}b"
fallbacks = ["{tag}a"]

[routes.solo]
provider = "{tag}a"

[routes.haiku]
provider = "{tag}b"

[simulator]
mode = "on"
latency = 0.0
"""


@pytest.fixture
async def gateway(tag: str, http: aiohttp.ClientSession) -> AsyncIterator[Harness]:
    config = parse_config(config_text(tag), environ={})
    async with serving(config, {"BREAKERD_ADMIN_TOKEN": TOKEN}) as service:
        yield Harness(service, tag, http)


class Path:
    """Which way a request takes through a route: its primary, or (primary down) a fallback
    in the other wire format."""

    def __init__(self, harness: Harness, down: bool) -> None:
        self.harness = harness
        self.down = down

    @property
    def simulator(self) -> Simulator:
        return self.harness.simulator

    def served(self, route: str) -> Wire:
        """The wire format that answers ``route`` on this path (taking the primary down on
        the ``fallback`` path)."""
        primary = PRIMARY[route]
        if not self.down:
            return primary
        self.simulator.control(api=primary, outage=True)
        return OTHER[primary]

    def forwarded(self, wire: Wire) -> Any:
        """The body of the last request the upstream of ``wire`` received."""
        bodies = self.simulator.bodies(wire)
        assert bodies, f"nothing reached the {wire} upstream"
        return bodies[-1]


@pytest.fixture(params=["primary", "fallback"])
def path(request: pytest.FixtureRequest, gateway: Harness) -> Path:
    return Path(gateway, down=request.param == "fallback")


@pytest.fixture
def base_url(gateway: Harness) -> str:
    return gateway.url
