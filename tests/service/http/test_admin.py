"""Health, breakers and management over HTTP, with the admin token's three cases."""

from __future__ import annotations

import aiohttp
import pytest

from service.config import parse_config
from service.monitor import get_circuit_breaker_monitor

from .conftest import TOKEN, Harness, config_text, serving

pytestmark = pytest.mark.anyio


async def test_breakers_lists_every_provider_breaker(harness: Harness) -> None:
    status, body, _ = await harness.request("GET", "/breakers")
    assert status == 200
    for name in (harness.a, harness.b):
        snapshot = body["breakers"][name]
        assert snapshot["name"] == name
        assert snapshot["state"] == "closed"
        assert snapshot["total_calls"] == 0


async def test_one_breaker_and_an_unknown_one(harness: Harness) -> None:
    snapshot = await harness.breaker(harness.a)
    assert (snapshot["state"], snapshot["forced"]) == ("closed", False)
    status, body, _ = await harness.request("GET", "/breakers/no-such-breaker")
    assert status == 404
    assert body["error"]["message"] == "no circuit breaker named 'no-such-breaker'"


async def test_open_close_and_reset(harness: Harness) -> None:
    status, body, _ = await harness.request("POST", f"/breakers/{harness.a}/open", token=TOKEN)
    assert status == 200
    assert (body["state"], body["forced"]) == ("open", True)
    assert body["retry_after"] is None  # forced open: no probe until someone acts

    status, body, _ = await harness.request("POST", f"/breakers/{harness.a}/close", token=TOKEN)
    assert (status, body["state"], body["forced"]) == (200, "closed", True)

    status, body, _ = await harness.request("POST", f"/breakers/{harness.a}/reset", token=TOKEN)
    assert (status, body["state"], body["forced"]) == (200, "closed", False)
    assert (await harness.breaker(harness.a))["state_transitions"] == 2  # closed->closed is none


async def test_reset_all(harness: Harness) -> None:
    for name in (harness.a, harness.b):
        await harness.request("POST", f"/breakers/{name}/open", token=TOKEN)
    status, body, _ = await harness.request("POST", "/breakers/reset", token=TOKEN)
    assert status == 200
    assert {harness.a, harness.b} <= set(body["reset"])
    for name in (harness.a, harness.b):
        assert (await harness.breaker(name))["state"] == "closed"


async def test_managing_an_unknown_breaker_is_404(harness: Harness) -> None:
    status, body, _ = await harness.request("POST", "/breakers/ghost/open", token=TOKEN)
    assert status == 404
    assert "ghost" in body["error"]["message"]


@pytest.mark.parametrize(
    "path", ["/breakers/{a}/reset", "/breakers/{a}/open", "/breakers/{a}/close", "/breakers/reset"]
)
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}x"}, 401),
        ({"Authorization": "Bearer \u00e9\u00e8"}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
    ],
)
async def test_admin_endpoints_need_the_token(
    harness: Harness, path: str, headers: dict[str, str], status: int
) -> None:
    await harness.request("POST", f"/breakers/{harness.b}/open", token=TOKEN)
    got, body, response_headers = await harness.request(
        "POST", path.format(a=harness.b), headers=headers
    )
    assert got == status, body
    state = (await harness.breaker(harness.b))["state"]
    if status == 401:
        assert body["error"]["type"] == "authentication_error"
        assert response_headers["WWW-Authenticate"] == 'Bearer realm="breakerd"'
        assert state == "open"  # nothing happened
        assert TOKEN not in str(body)


async def test_without_a_configured_token_admin_is_disabled_and_says_how_to_enable(
    tag: str, http: aiohttp.ClientSession
) -> None:
    config = parse_config(config_text(tag), environ={})
    async with serving(config, {}) as service:
        harness = Harness(service, tag, http)
        for token in (None, TOKEN, ""):
            status, body, _ = await harness.request(
                "POST", f"/breakers/{harness.a}/open", token=token
            )
            assert status == 403
            assert body["error"]["type"] == "permission_error"
            assert "BREAKERD_ADMIN_TOKEN" in body["error"]["message"]
        assert (await harness.breaker(harness.a))["state"] == "closed"
        status, _, _ = await harness.request("GET", "/breakers")
        assert status == 200  # reading needs no token


async def test_health_reports_the_worst_breaker_and_fails_only_when_a_route_cannot_be_served(
    harness: Harness,
) -> None:
    # The registry is process-wide: start from every breaker closed and clean.
    await get_circuit_breaker_monitor().reset_all_circuit_breakers_async()
    status, body, _ = await harness.request("GET", "/health")
    assert status == 200
    assert body["overall_health"] == "healthy"
    assert body["circuit_breakers"][harness.a]["status"] == "healthy"

    # b is only a fallback: every route is still served, so an open b is no failure.
    await harness.request("POST", f"/breakers/{harness.b}/open", token=TOKEN)
    status, body, _ = await harness.request("GET", "/health")
    assert (status, body["overall_health"]) == (200, "failed")
    await harness.request("POST", f"/breakers/{harness.b}/reset", token=TOKEN)

    # a is the only provider of route "solo": that route cannot be served.
    await harness.request("POST", f"/breakers/{harness.a}/open", token=TOKEN)
    status, body, _ = await harness.request("GET", "/health")
    assert status == 503
    assert [entry["route"] for entry in body["readiness"]["unservable"]] == ["solo"]
    assert body["overall_health"] == "failed"
    assert body["circuit_breakers"][harness.a] == {
        "state": "open",
        "status": "failed",
        "failure_rate": 0.0,
        "forced": True,
    }

    await harness.request("POST", f"/breakers/{harness.a}/reset", token=TOKEN)
    status, body, _ = await harness.request("GET", "/health")
    assert (status, body["overall_health"]) == (200, "healthy")
