"""/livez, /readyz and /health's status: the rules as tables, then the real service."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest

from actors.config import CircuitState
from actors.snapshot import CircuitBreakerMetrics
from service.config import parse_config
from service.probes import ProviderStatus, health_status, provider_status, readiness
from tests.service.http.conftest import TOKEN, Harness, config_text, serving

pytestmark = pytest.mark.anyio


def snapshot(
    state: CircuitState,
    *,
    forced: bool = False,
    in_flight: int = 0,
    retry_after: float | None = None,
) -> CircuitBreakerMetrics:
    return CircuitBreakerMetrics(
        name="p_client",
        state=state,
        forced=forced,
        total_calls=0,
        successful_calls=0,
        failed_calls=0,
        ignored_calls=0,
        rejected_calls=0,
        consecutive_failures=0,
        failure_rate=0.0,
        state_transitions=0,
        last_failure_time=None,
        last_success_time=None,
        state_changed_at=None,
        half_open_calls_in_flight=in_flight,
        retry_after=retry_after,
        duration_p50=None,
        duration_p95=None,
        duration_p99=None,
    )


FORCED_OPEN = snapshot(CircuitState.OPEN, forced=True, retry_after=math.inf)


@pytest.mark.parametrize(
    ("breaker", "key_env", "cooldown", "available", "reason"),
    [
        (None, None, None, True, None),
        (snapshot(CircuitState.CLOSED), None, None, True, None),
        (snapshot(CircuitState.CLOSED), "OPENAI_API_KEY", None, False, "no API key (OPENAI"),
        (snapshot(CircuitState.CLOSED), None, 2.5, False, "rate-limit cooldown, 2.5s left"),
        (snapshot(CircuitState.CLOSED), None, 0.0, True, None),
        (snapshot(CircuitState.HALF_OPEN, in_flight=0), None, None, True, None),
        (snapshot(CircuitState.HALF_OPEN, in_flight=2), None, None, False, "probe slot"),
        (snapshot(CircuitState.OPEN, retry_after=4.2), None, None, False, "next probe in 4.2s"),
        (snapshot(CircuitState.OPEN, retry_after=0.0), None, None, True, None),
        (FORCED_OPEN, None, None, False, "forced"),
    ],
)
def test_a_provider_can_take_a_call_when_closed_probing_with_room_or_due_with_its_key(
    breaker: CircuitBreakerMetrics | None,
    key_env: str | None,
    cooldown: float | None,
    available: bool,
    reason: str | None,
) -> None:
    status = provider_status(
        "p", breaker, half_open_max_calls=2, key_env=key_env, cooldown=cooldown
    )
    assert status.available is available
    if reason is None:
        assert status.reason is None
    else:
        assert status.reason is not None and reason in status.reason


UP = ProviderStatus(name="up", available=True)
DOWN = ProviderStatus(name="down", available=False, reason="breaker open")


def test_a_route_is_servable_through_any_provider_of_its_chain_or_only_its_primary() -> None:
    statuses = {"up": UP, "down": DOWN}
    chains = {"fallback-serves": ["down", "up"], "primary-serves": ["up", "down"]}
    assert readiness(chains, statuses).ready
    strict = readiness(chains, statuses, require_primaries=True)
    assert not strict.ready
    assert [route.route for route in strict.unservable] == ["fallback-serves"]
    assert strict.unservable[0].providers == [DOWN]
    assert readiness({}, statuses).ready


@pytest.mark.parametrize(
    ("fail_on", "routes_ok", "states", "status"),
    [
        ("never", False, ["open"], 200),
        ("route_unservable", True, ["open"], 200),
        ("route_unservable", False, ["open"], 503),
        ("any_open", True, ["closed", "half_open"], 200),
        ("any_open", True, ["closed", "open"], 503),
    ],
)
def test_health_status_follows_fail_on(
    fail_on: Any, routes_ok: bool, states: list[str], status: int
) -> None:
    ready = readiness({"r": ["up" if routes_ok else "down"]}, {"up": UP, "down": DOWN})
    summary = {"circuit_breakers": {str(i): {"state": s} for i, s in enumerate(states)}}
    assert health_status(fail_on, summary, ready) == status


# -- the real service ----------------------------------------------------------------------


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_livez_and_readyz_follow_the_routes_not_the_breakers_alone(
    harness: Harness,
) -> None:
    url, http = harness.url, harness.http
    assert await get(http, f"{url}/livez") == (200, {"live": True})
    status, body = await get(http, f"{url}/readyz")
    assert (status, body["ready"], body["unservable"]) == (200, True, [])

    # The fallback of "chat" is open: every route is still served.
    await harness.request("POST", f"/breakers/{harness.b}/open", token=TOKEN)
    assert (await get(http, f"{url}/readyz"))[0] == 200

    # The primary of both "chat" and "solo" too: neither can be served; liveness stays.
    await harness.request("POST", f"/breakers/{harness.a}/open", token=TOKEN)
    status, body = await get(http, f"{url}/readyz")
    assert status == 503
    assert sorted(route["route"] for route in body["unservable"]) == ["chat", "solo"]
    solo = next(route for route in body["unservable"] if route["route"] == "solo")
    assert solo["providers"] == [
        {"name": f"{harness.tag}a", "available": False, "reason": "breaker forced open"}
    ]
    assert (await get(http, f"{url}/livez"))[0] == 200

    await harness.request("POST", f"/breakers/{harness.a}/reset", token=TOKEN)
    await harness.request("POST", f"/breakers/{harness.b}/reset", token=TOKEN)
    assert (await get(http, f"{url}/readyz"))[0] == 200


async def test_require_primaries_and_fail_on_are_read_from_the_config(
    tag: str, http: aiohttp.ClientSession
) -> None:
    text = config_text(tag) + '\n[health]\nfail_on = "any_open"\nrequire_primaries = true\n'
    async with serving(parse_config(text, environ={}), {"BREAKERD_ADMIN_TOKEN": TOKEN}) as service:
        await http.post(
            f"{service.url}/breakers/{tag}b_client/open",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        # Only a fallback is open: ready (primaries up), but any_open fails /health.
        assert (await get(http, f"{service.url}/readyz"))[0] == 200
        assert (await get(http, f"{service.url}/health"))[0] == 503
        await http.post(
            f"{service.url}/breakers/{tag}a_client/open",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        status, body = await get(http, f"{service.url}/readyz")
        assert status == 503
        # "chat" could be served by nobody either, but its primary alone decides here.
        assert {route["route"] for route in body["unservable"]} == {"chat", "solo"}
        for name in ("a", "b"):
            await http.post(
                f"{service.url}/breakers/{tag}{name}_client/reset",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )


async def test_a_route_whose_only_provider_has_no_key_is_not_ready_and_fails_health(
    tag: str, http: aiohttp.ClientSession
) -> None:
    text = f"""
[providers.{tag}k]
kind = "openai"
model = "m"
api_key_env = "{tag.upper()}_UNSET_KEY"
[routes.keyless]
provider = "{tag}k"
[simulator]
mode = "off"
[service]
port = 0
"""
    async with serving(parse_config(text, environ={}), {}) as service:
        status, body = await get(http, f"{service.url}/readyz")
        assert status == 503
        assert body["unservable"][0]["providers"][0]["reason"] == (
            f"no API key ({tag.upper()}_UNSET_KEY)"
        )
        status, body = await get(http, f"{service.url}/health")
        assert status == 503 and body["readiness"]["ready"] is False
        assert (await get(http, f"{service.url}/livez"))[0] == 200


async def test_a_provider_in_a_rate_limit_cooldown_is_not_available(harness: Harness) -> None:
    harness.simulator.control(api="openai", error_rate=1.0, status=429, retry_after=30)
    try:
        status, _, _ = await harness.chat("solo")
        assert status == 429
    finally:
        harness.simulator.control(reset=True)
    status, body = await get(harness.http, f"{harness.url}/readyz")
    assert status == 503
    (solo,) = body["unservable"]  # "chat" falls back to b
    assert solo["route"] == "solo"
    assert solo["providers"][0]["reason"].startswith("rate-limit cooldown")
