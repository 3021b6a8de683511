"""The service's log lines: the access log, transitions, JSON lines, and no secret anywhere."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from service.config import parse_config
from service.gateway_auth import digest, key_id
from service.lifecycle import Service
from service.logs import FIELDS, JsonFormatter, TextFormatter, breaker_outcome
from service.simulator import Simulator
from tests.service.http.conftest import TOKEN, serving, wait_for
from tests.service.ops.test_gateway_keys import config_text, simulator

pytestmark = pytest.mark.anyio

__all__ = ["simulator"]  # a fixture

PROVIDER_KEY = "sk-provider-secret-0a9f7e"
CLIENT_KEY = "bk-client-secret-55c1d0"
SECRETS = (PROVIDER_KEY, CLIENT_KEY, TOKEN)

BREAKERS = """
[breakers.default]
failure_threshold = 2
success_threshold = 1
timeout_duration = 0.2
"""


def fields(record: logging.LogRecord) -> dict[str, object]:
    return dict(getattr(record, FIELDS, {}))


@pytest.fixture
async def logged(
    tag: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Service]:
    """A service with a provider key, a client key and the admin token, logging at DEBUG."""
    caplog.set_level(logging.DEBUG)
    text = config_text(tag, simulator, 'api_keys_env = "H6_CLIENT_KEYS"') + BREAKERS
    environ = {
        "H6_PROVIDER_KEY": PROVIDER_KEY,
        "H6_CLIENT_KEYS": CLIENT_KEY,
        "BREAKERD_ADMIN_TOKEN": TOKEN,
    }
    async with serving(parse_config(text, environ={}), environ) as service:
        yield service


async def chat(http: aiohttp.ClientSession, url: str, key: str = CLIENT_KEY) -> int:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        await response.read()
        return response.status


async def test_an_outage_cycle_as_the_log_tells_it(
    logged: Service, simulator: Simulator, tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = logged.url
    async with aiohttp.ClientSession() as http:
        assert await chat(http, url) == 200
        simulator.control(api="openai", outage=True)
        assert [await chat(http, url) for _ in range(3)] == [502, 502, 503]
        simulator.control(api="openai", outage=False)

        async def recovered() -> bool:
            return await chat(http, url) == 200

        await wait_for(recovered)
        assert await chat(http, url, key="bk-not-a-key") == 401
        for path in ("/livez", "/readyz", "/health", "/metrics"):
            async with http.get(f"{url}{path}") as response:
                assert response.status == 200

    access = [fields(r) for r in caplog.records if r.name == "service.access"]
    assert all(line["path"] == "/v1/chat/completions" for line in access)  # no probe lines
    first, failed, rejected = access[0], access[1], access[3]
    client = key_id(digest(CLIENT_KEY))
    assert first == {
        "event": "access",
        "method": "POST",
        "path": "/v1/chat/completions",
        "route": "gpt",
        "provider": f"{tag}o",
        "status": 200,
        "duration_ms": first["duration_ms"],
        "fallback": False,
        "breaker_outcome": "success",
        "client": client,
    }
    assert (failed["status"], failed["breaker_outcome"]) == (502, "failure")
    assert (rejected["status"], rejected["breaker_outcome"]) == (503, "rejected")
    assert (access[-1]["status"], access[-1]["client"]) == (401, None)

    transitions = [r for r in caplog.records if r.name == "service.breakers"]
    opened = next(r for r in transitions if fields(r)["to_state"] == "open")
    assert opened.levelno == logging.WARNING
    assert fields(opened)["breaker"] == f"{tag}o_client"
    assert fields(opened)["reason"] == "failure_threshold"
    assert fields(opened)["consecutive_failures"] == 2
    assert 0 < float(str(fields(opened)["retry_in_s"])) <= 0.2
    assert "opened (failure_threshold): 2 consecutive failures" in opened.getMessage()
    closed = next(r for r in transitions if fields(r)["to_state"] == "closed")
    assert closed.levelno == logging.INFO

    # Every line, in both formats, at every level: no secret.
    for record in caplog.records:
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(record)
            for secret in SECRETS:
                assert secret not in line, (record.name, line)


def test_json_lines_have_stable_keys_and_one_object_per_line() -> None:
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "a\nb %d", (7,), None)
    setattr(record, FIELDS, {"event": "access", "status": 200, "route": "gpt"})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    decoded = json.loads(line)
    assert list(decoded) == ["time", "level", "logger", "message", "event", "status", "route"]
    assert decoded["message"] == "a\nb 7" and decoded["level"] == "INFO"
    head, _, rest = TextFormatter().format(record).partition("\n")
    assert head.endswith("INFO    service.access: a event=access status=200 route=gpt")
    assert rest == "b 7"  # the fields stay on the first line, above a traceback


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [(200, None, "success"), (503, "circuit_open", "rejected"), (502, "upstream_error", "failure"),
     (504, "upstream_timeout", "failure"), (429, "rate_limited", "not_counted"),
     (400, None, "not_counted"), (503, "provider_saturated", "not_counted")],
)  # fmt: skip
def test_breaker_outcome_from_the_answer(status: int, code: str | None, outcome: str) -> None:
    assert breaker_outcome(status, code) == outcome


async def test_probe_scrapes_are_logged_when_asked(
    tag: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "service.access")
    text = config_text(tag, simulator, "") + "[logging]\nprobe_access_log = true\n"
    environ = {"H6_PROVIDER_KEY": "k"}
    async with (
        serving(parse_config(text, environ={}), environ) as service,
        aiohttp.ClientSession() as http,
        http.get(f"{service.url}/readyz") as answer,
    ):
        assert answer.status == 200
    assert [fields(r)["path"] for r in caplog.records] == ["/readyz"]
