"""The ``anthropic-beta`` header of ``/v1/messages*``: the real ``anthropic`` SDK sends it
(``betas=[...]``), the gateway forwards it to Anthropic-wire upstreams only.

Each call here runs with the route's primary down, so that one request reaches both
upstreams (the primary, which fails, and the fallback of the other wire format); the
simulator records the headers each one received.
"""

from __future__ import annotations

import anthropic
import pytest

from service.simulator import Received
from tests.service.http.conftest import Harness
from tests.service.sdk.conftest import PRIMARY, Wire
from tests.service.sdk.test_anthropic_sdk import HELLO, client

__all__ = ["client"]  # the SDK's client on the gateway, a fixture shared with its tests

pytestmark = pytest.mark.anyio

BETAS = ["prompt-caching-2024-07-31", "output-128k-2025-02-19"]
SENT = ",".join(BETAS)  # how the SDK joins its betas into one header


def received(gateway: Harness, wire: Wire) -> list[Received]:
    return [entry for entry in gateway.simulator.received if entry.api == wire]


def assert_forwarded_to_anthropic_only(gateway: Harness) -> None:
    [to_anthropic] = received(gateway, "anthropic")
    [to_openai] = received(gateway, "openai")
    assert to_anthropic.headers.get("anthropic-beta") == SENT
    assert "anthropic-beta" not in to_openai.headers
    # Nothing else of the client's comes along: not its key (the OpenAI-wire upstream gets
    # its provider's as a bearer token), not the SDK's own headers.
    assert "x-api-key" not in to_openai.headers
    for entry in (to_anthropic, to_openai):
        assert not [name for name in entry.headers if name.startswith("x-stainless")]


@pytest.mark.parametrize("route", ["claude", "gpt"])
async def test_betas_reach_the_anthropic_upstream_and_not_the_openai_one(
    client: anthropic.AsyncAnthropic, gateway: Harness, route: str
) -> None:
    gateway.simulator.control(api=PRIMARY[route], outage=True)
    answer = await client.beta.messages.create(
        model=route, max_tokens=64, messages=HELLO, betas=BETAS
    )
    assert answer.stop_reason == "end_turn"
    assert_forwarded_to_anthropic_only(gateway)


@pytest.mark.parametrize("route", ["claude", "gpt"])
async def test_betas_of_a_stream_reach_the_anthropic_upstream_and_not_the_openai_one(
    client: anthropic.AsyncAnthropic, gateway: Harness, route: str
) -> None:
    gateway.simulator.control(api=PRIMARY[route], outage=True)
    async with client.beta.messages.stream(
        model=route, max_tokens=64, messages=HELLO, betas=BETAS
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert_forwarded_to_anthropic_only(gateway)


async def test_betas_of_count_tokens_reach_the_anthropic_upstream(
    client: anthropic.AsyncAnthropic, gateway: Harness
) -> None:
    answer = await client.beta.messages.count_tokens(model="claude", messages=HELLO, betas=BETAS)
    assert answer.input_tokens > 0
    [entry] = received(gateway, "anthropic")
    assert entry.path == "/v1/messages/count_tokens"
    # The SDK adds the token-counting beta of its own.
    assert set(BETAS) <= set(entry.headers.get("anthropic-beta", "").split(","))


async def test_a_beta_header_that_cannot_be_sent_is_the_clients_400(gateway: Harness) -> None:
    status, body, _ = await gateway.request(
        "POST",
        "/v1/messages",
        json={"model": "claude", "max_tokens": 64, "messages": HELLO},
        headers={"anthropic-beta": "caf\u20ac"},  # no Latin-1 byte for it on the way out
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "anthropic-beta" in body["error"]["message"]
    assert not gateway.simulator.received
