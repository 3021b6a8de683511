"""The dashboard in a real browser (Debian chromium) against the in-process service.

The service runs with its upstream simulator (``tests/service/http/conftest.py``); outages are
injected through the simulator, state changes reach the page over ``/events``, and what the
page shows is read back from the DOM and from screenshots.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from playwright.async_api import Locator, Page, expect

from service.circuit_breaker import get_circuit_breaker, remove_circuit_breaker
from service.config import parse_config, with_service_overrides
from service.dashboard import CONTENT_SECURITY_POLICY
from service.lifecycle import Service
from tests.service.dashboard.conftest import Tab
from tests.service.dashboard.png import share_near
from tests.service.http.conftest import TOKEN, config_text, serving

pytestmark = pytest.mark.anyio

#: The card colours of app.css (border and badge).
CLOSED_GREEN = "#15803d"
OPEN_RED = "#b91c1c"

#: Set to write the README's screenshot (docs/dashboard.png) from the outage test.
UPDATE_SCREENSHOT = os.environ.get("BREAKERD_UPDATE_SCREENSHOT") == "1"
ROOT = Path(__file__).resolve().parents[3]
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"

_tags = iter(range(10**6))


@asynccontextmanager
async def service(
    *, token: bool = True, timeout_duration: float = 1.5, port: int = 0, tag: str | None = None
) -> AsyncIterator[tuple[Service, str]]:
    """The service with the simulator; yields it and the tag of its provider names."""
    tag = tag or f"dash{next(_tags)}x"
    config = parse_config(config_text(tag, timeout_duration=timeout_duration), environ={})
    config = with_service_overrides(config, host=None, port=port)
    environ = {"BREAKERD_ADMIN_TOKEN": TOKEN} if token else {}
    try:
        async with serving(config, environ) as running:
            yield running, tag
    finally:
        # The registry is process-wide: left open, they would degrade later tests' health.
        for provider in config.providers:
            remove_circuit_breaker(f"{provider}_client")


async def chat(url: str, model: str = "solo") -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        await response.read()
        return response.status


async def snapshot(url: str, name: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/breakers/{name}") as response:
        assert response.status == 200
        return dict(await response.json())


async def overall_health(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as response:
        return str((await response.json())["overall_health"])


def card(page: Page, name: str) -> Locator:
    """The card whose name is exactly ``name``."""
    exact = re.compile(f"^{re.escape(name)}$")
    return page.locator(".card").filter(has=page.locator(".name", has_text=exact))


async def test_the_page_loads_from_the_root_with_a_strict_policy_and_no_console_errors(
    tab: Tab,
) -> None:
    page = tab.page
    async with service(token=False) as (running, tag):
        response = await page.goto(running.url + "/")
        assert response is not None and response.url == running.url + "/dashboard"
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY

        a = card(page, f"{tag}a_client")
        await expect(a.locator(".state")).to_have_text("CLOSED")
        await expect(a.locator(".consecutive")).to_have_text("0 / 2")
        await expect(a.locator(".probes")).to_have_text("0 / 1")
        await expect(page.locator("#live")).to_have_text("live")
        # What /health says: other tests' breakers share this process's registry.
        await expect(page.locator("#health")).to_have_text(await overall_health(running.url))
        await expect(page.locator("#ready")).to_have_text("ready")
        await expect(page.locator("#cluster")).to_have_text("off")
        # Two metrics events make the first sparkline point.
        await expect(a.locator(".legend")).to_contain_text("calls/s now:")
        # No token configured: no buttons, and the page says how to get them.
        await expect(page.locator("#admin-disabled")).to_be_visible()
        await expect(page.locator("#admin-disabled")).to_contain_text("BREAKERD_ADMIN_TOKEN")
        await expect(page.locator("#token-form")).to_be_hidden()
        await expect(a.locator(".actions")).to_be_hidden()
        # No inline handlers or inline scripts anywhere in the page.
        html = await page.content()
        assert not re.search(r"\son[a-z]+\s*=", html)
        assert await page.locator("script:not([src])").count() == 0
        assert unexpected(tab.problems) == []


async def test_an_outage_turns_the_card_open_and_recovery_closes_it(
    tab: Tab, tmp_path: Path
) -> None:
    page = tab.page
    async with service() as (running, tag):
        name = f"{tag}a_client"
        await page.goto(running.url + "/dashboard")
        a = card(page, name)
        await expect(a.locator(".state")).to_have_text("CLOSED")
        await expect(page.locator("#live")).to_have_text("live")
        # Traffic until the sparkline has drawn three samples of it (a sample is the rate
        # between two metrics events, every 0.5 s here).
        success = a.locator(".line-success")
        with anyio.fail_after(8):
            while (
                not re.search(r"[1-9][\d.]* ok", await a.locator(".legend").inner_text())
                or len((await success.get_attribute("points") or "").split()) < 3
            ):
                assert await chat(running.url) == 200
                await anyio.sleep(0.02)
        closed = await a.screenshot(path=tmp_path / "closed.png")

        simulator = running.simulator
        assert simulator is not None
        simulator.control(api="openai", outage=True)
        with anyio.fail_after(2):  # from the injected outage to OPEN on the page: within 2 s
            assert [await chat(running.url), await chat(running.url)] == [502, 502]
            await expect(a.locator(".state")).to_have_text("OPEN", timeout=2000)
        await expect(a).to_have_class(re.compile(r"\bis-open\b"))
        await expect(a.locator(".consecutive")).to_have_text("2 / 2")
        await expect(a.locator(".row-probe")).to_be_visible()
        opened = await a.screenshot(path=tmp_path / "open.png")
        if UPDATE_SCREENSHOT:
            await page.screenshot(path=DOCS_SCREENSHOT)

        # The card's region changed colour: red where it was green.
        assert share_near(closed, CLOSED_GREEN) > 0.005
        assert share_near(closed, OPEN_RED) < 0.001
        assert share_near(opened, OPEN_RED) > 0.005
        assert share_near(opened, CLOSED_GREEN) < 0.001

        # Recovery: the upstream is back; the break ends (HALF-OPEN) and a probe closes it.
        simulator.control(api="openai", reset=True)
        await expect(a.locator(".state")).to_have_text("HALF-OPEN", timeout=4000)
        await a.screenshot(path=tmp_path / "recovering.png")
        assert await chat(running.url) == 200
        await expect(a.locator(".state")).to_have_text("CLOSED", timeout=2000)

        timeline = page.locator("#timeline li").filter(has_text=name)
        await expect(timeline).to_have_count(3)
        texts = await timeline.all_inner_texts()
        assert "HALF-OPEN → CLOSED" in texts[0] and "probes_succeeded" in texts[0]
        assert "OPEN → HALF-OPEN" in texts[1] and "timeout_elapsed" in texts[1]
        assert "CLOSED → OPEN" in texts[2] and "failure_threshold" in texts[2]
    assert all(
        (tmp_path / f"{shot}.png").stat().st_size > 0 for shot in ("closed", "open", "recovering")
    )


async def test_with_the_token_force_open_asks_then_forces_the_breaker(tab: Tab) -> None:
    page = tab.page
    async with service() as (running, tag):
        name = f"{tag}b_client"
        await page.goto(running.url + "/dashboard")
        b = card(page, name)
        await expect(b.locator(".state")).to_have_text("CLOSED")
        # Actions appear only once a token is entered.
        await expect(page.locator("#token-form")).to_be_visible()
        await expect(b.locator(".actions")).to_be_hidden()
        await page.locator("#token").fill(TOKEN)
        await page.locator("#token").press("Enter")
        await expect(b.locator(".actions")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('breakerd.adminToken')") == TOKEN
        assert TOKEN not in page.url

        # Cancelling the confirmation does nothing.
        await b.get_by_role("button", name=f"Force open {name}").click()
        await expect(page.locator("#confirm")).to_be_visible()
        await page.keyboard.press("Escape")
        await expect(page.locator("#confirm")).to_be_hidden()
        assert (await snapshot(running.url, name))["forced"] is False

        await b.get_by_role("button", name=f"Force open {name}").click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("#message")).to_have_text(
            f"Force open “{name}”: now OPEN (forced)"
        )
        await expect(b.locator(".forced")).to_be_visible()
        await expect(b.locator(".probe")).to_have_text("never (forced open)")
        state = await snapshot(running.url, name)
        assert (state["state"], state["forced"]) == ("open", True)

        # A wrong token: the server's answer is shown and the token form comes back.
        await page.evaluate("sessionStorage.setItem('breakerd.adminToken', 'wrong')")
        await b.get_by_role("button", name=f"Reset {name}").click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("#message")).to_contain_text("HTTP 401")
        await expect(page.locator("#token-form")).to_be_visible()
        assert (await snapshot(running.url, name))["forced"] is True

        await page.locator("#token").fill(TOKEN)
        await page.locator("#token").press("Enter")
        await page.locator("#reset-all").click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("#message")).to_contain_text("Reset ")
        await expect(b.locator(".state")).to_have_text("CLOSED")
        assert (await snapshot(running.url, name))["forced"] is False


async def test_a_hostile_breaker_name_renders_as_text(tab: Tab) -> None:
    hostile = f'<img src=x onerror="window.pwned=1">{next(_tags)}'
    get_circuit_breaker(hostile)
    get_circuit_breaker("__proto__")
    try:
        await check_hostile_names(tab, hostile)
    finally:
        remove_circuit_breaker(hostile)
        remove_circuit_breaker("__proto__")


async def check_hostile_names(tab: Tab, hostile: str) -> None:
    page = tab.page
    async with service() as (running, _):
        await page.goto(running.url + "/dashboard")
        await page.locator("#filter").fill("onerror")
        hostile_card = card(page, hostile)
        await expect(hostile_card.locator(".name")).to_have_text(hostile)
        await expect(hostile_card.locator(".state")).to_have_text("CLOSED")
        await expect(hostile_card.locator(".row-cooldown")).to_be_hidden()  # not an LLM breaker
        assert await page.locator("#cards img").count() == 0
        assert await page.evaluate("window.pwned") is None
        # Names that are also JavaScript's own property names are just names too.
        await page.locator("#filter").fill("__proto__")
        proto = card(page, "__proto__")
        await expect(proto.locator(".consecutive")).to_have_text("0 / 5")  # its own policy
        assert tab.problems == []


async def test_a_rate_limited_provider_shows_its_cooldown(tab: Tab) -> None:
    page = tab.page
    async with service() as (running, tag):
        name = f"{tag}a_client"
        await page.goto(running.url + "/dashboard")
        a = card(page, name)
        await expect(a.locator(".state")).to_have_text("CLOSED")
        await expect(a.locator(".cooldown")).to_have_text("none")  # an LLM provider's breaker
        simulator = running.simulator
        assert simulator is not None
        simulator.control(api="openai", status=429, error_rate=1.0, retry_after=30)
        assert await chat(running.url) == 429
        # The next metrics snapshot (every 0.5 s here) carries it; the page counts it down.
        await expect(a.locator(".cooldown")).to_have_text(re.compile(r"^(29|30|2\d)s$"))
        await expect(a.locator(".state")).to_have_text("CLOSED")  # a 429 is no failure


async def test_the_live_view_resumes_after_the_service_restarts(tab: Tab) -> None:
    page = tab.page
    async with service() as (running, tag):
        port = running.port
        name = f"{tag}a_client"
        await page.goto(running.url + "/dashboard")
        await expect(page.locator("#live")).to_have_text("live")
        await expect(card(page, name).locator(".state")).to_have_text("CLOSED")
    await expect(page.locator("#live")).to_have_text("reconnecting")

    async with service(port=port, tag=tag) as (running, _):
        await expect(page.locator("#live")).to_have_text("live", timeout=8000)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            url = f"{running.url}/breakers/{name}/open"
            async with http.post(url, headers=headers) as response:
                assert response.status == 200
        a = card(page, name)
        await expect(a.locator(".state")).to_have_text("OPEN")
        await expect(a.locator(".forced")).to_be_visible()
        await expect(page.locator("#timeline li").filter(has_text=name)).to_contain_text(
            "forced_open"
        )


async def test_keyboard_and_a_narrow_screen(tab: Tab) -> None:
    page = tab.page
    async with service() as (running, tag):
        name = f"{tag}a_client"
        for width, height in ((1280, 800), (390, 844)):
            await page.set_viewport_size({"width": width, "height": height})
            await page.goto(running.url + "/dashboard")
            await expect(card(page, name).locator(".state")).to_have_text("CLOSED")
            # Nothing wider than the screen: no sideways scrolling.
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (width, overflow)
            # Cards and the timeline side by side on a wide screen, stacked on a narrow one.
            box = await card(page, name).bounding_box()
            timeline = await page.locator(".timeline-section").bounding_box()
            assert box is not None and timeline is not None
            assert box["x"] >= 0 and box["x"] + box["width"] <= width
            if width < 900:
                assert box["width"] > 0.8 * width and timeline["y"] >= box["y"] + box["height"]
            else:
                assert timeline["x"] >= box["x"] + box["width"]

        # Keyboard only: filter, tab to the token box, type, Enter; tab to the card's button,
        # Enter; the dialog opens with focus inside, Escape cancels.
        focused = "document.activeElement && document.activeElement.id"
        await page.keyboard.press("Tab")
        assert await page.evaluate(focused) == "filter"
        await page.keyboard.type(name)
        await expect(page.locator(".card:visible")).to_have_count(1)
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate(focused) == "token":
                break
        assert await page.evaluate(focused) == "token"
        await page.keyboard.type(TOKEN)
        await page.keyboard.press("Enter")
        button = card(page, name).get_by_role("button", name=f"Force open {name}")
        await expect(button).to_be_visible()
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await button.evaluate("b => b === document.activeElement"):
                break
        await page.keyboard.press("Enter")
        await expect(page.locator("#confirm")).to_be_visible()
        assert await page.evaluate("document.activeElement.closest('dialog') !== null")
        await page.keyboard.press("Escape")
        await expect(page.locator("#confirm")).to_be_hidden()
        assert (await snapshot(running.url, name))["forced"] is False
        assert tab.problems == []


async def test_five_hundred_breakers_filter_and_sort_open_first(tab: Tab, tmp_path: Path) -> None:
    # A service process of its own: 500 breakers would otherwise stay in this process's
    # registry for every test after this one.
    page = tab.page
    lines = ["[service]", "events_interval = 0.5", "[simulator]", 'mode = "on"']
    for i in range(500):
        lines += [f"[providers.p{i:03d}]", 'kind = "openai"', 'model = "m"']
        lines += [f"[routes.r{i:03d}]", f'provider = "p{i:03d}"']
    config = tmp_path / "many.toml"
    config.write_text("\n".join(lines) + "\n")
    async with serving_process(config) as url:
        await page.goto(url + "/dashboard")
        await expect(page.locator(".card")).to_have_count(500, timeout=10_000)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(f"{url}/breakers/p321_client/open", headers=headers) as response:
                assert response.status == 200
        # Open first, within 2 s of the change.
        first = page.locator(".card").first
        await expect(first.locator(".name")).to_have_text("p321_client", timeout=2000)
        await page.locator("#filter").fill("p32")
        await expect(page.locator(".card:visible")).to_have_count(10)
        await expect(page.locator("#shown")).to_contain_text("(10 shown)")
        await page.locator("#sort").select_option("name")
        await expect(page.locator(".card:visible").first.locator(".name")).to_have_text(
            "p320_client"
        )
        await expect(page.locator("#counts")).to_have_text("500 (1 open, 0 half-open, 499 closed)")
        await expect(page.locator("#ready")).to_have_text("not ready")
        assert unexpected(tab.problems) == []


def unexpected(problems: list[str]) -> list[str]:
    """``problems`` but the 503s of /health and /readyz: answers the page shows (a route that
    cannot be served), which chromium logs as failed loads all the same."""
    answered = re.compile(r"status of 503 .*'url': 'http://[^']+/(health|readyz)'")
    return [problem for problem in problems if not answered.search(problem)]


@asynccontextmanager
async def serving_process(config: Path) -> AsyncIterator[str]:
    """``python -m service --config CONFIG --port 0`` until the block ends; yields its URL."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BREAKERD_") and not key.endswith("_API_KEY")
    }
    env["BREAKERD_ADMIN_TOKEN"] = TOKEN
    command = [sys.executable, "-m", "service", "--config", str(config), "--port", "0"]
    process = await anyio.open_process(command, cwd=ROOT, env=env, stdout=None)
    async with process:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(20):
            async for chunk in process.stderr:
                seen += chunk
                found = re.search(rb"listening on (http://\S+)", seen)
                if found:
                    break
        assert found, seen.decode()
        try:
            yield found[1].decode()
        finally:
            process.terminate()
            with anyio.fail_after(15):
                await process.wait()
