"""Gateway client keys: the real OpenAI and Anthropic SDKs with their ``api_key``, a file of
digests, constant-time identification, and the warning for an open gateway on the network."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest

from service.config import ConfigError, parse_config
from service.gateway_auth import GatewayKeys, digest, is_loopback, key_id, warn_if_open
from service.lifecycle import Service
from service.simulator import Simulator
from tests.service.http.conftest import serving

pytestmark = pytest.mark.anyio

PROVIDER_KEY = "sk-provider-secret-4f1c9e"
OPENAI_CLIENT_KEY = "bk-openai-client-7d2a"
ANTHROPIC_CLIENT_KEY = "bk-anthropic-client-93be"


def config_text(tag: str, simulator: Simulator, gateway: str) -> str:
    return f"""
[service]
port = 0
[providers.{tag}o]
kind = "openai"
model = "m-o"
api_key_env = "H6_PROVIDER_KEY"
base_url = "{simulator.base_url("openai")}"
[providers.{tag}a]
kind = "anthropic"
model = "m-a"
api_key_env = "H6_PROVIDER_KEY"
base_url = "{simulator.base_url("anthropic")}"
[routes.gpt]
provider = "{tag}o"
[routes.claude]
provider = "{tag}a"
[simulator]
mode = "off"
[gateway]
{gateway}
"""


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    simulator = Simulator(host="127.0.0.1", port=0, latency=0.0)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def keyed(tag: str, simulator: Simulator) -> AsyncIterator[Service]:
    text = config_text(tag, simulator, 'api_keys_env = "H6_GATEWAY_KEYS"')
    environ = {
        "H6_PROVIDER_KEY": PROVIDER_KEY,
        "H6_GATEWAY_KEYS": f" {OPENAI_CLIENT_KEY} ,{ANTHROPIC_CLIENT_KEY}",
    }
    async with serving(parse_config(text, environ={}), environ) as service:
        yield service


async def test_the_openai_sdk_gets_in_with_a_key_and_out_without(
    keyed: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "service.access")
    good = openai.AsyncOpenAI(api_key=OPENAI_CLIENT_KEY, base_url=f"{keyed.url}/v1", max_retries=0)
    async with good:
        answer = await good.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hello"}]
        )
    assert answer.choices[0].message.content
    bad = openai.AsyncOpenAI(api_key="bk-wrong", base_url=f"{keyed.url}/v1", max_retries=0)
    async with bad:
        with pytest.raises(openai.AuthenticationError) as refused:
            await bad.chat.completions.create(
                model="gpt", messages=[{"role": "user", "content": "hello"}]
            )
    assert refused.value.status_code == 401
    clients = [getattr(r, "breakerd_fields", {}).get("client") for r in caplog.records]
    assert clients == [key_id(digest(OPENAI_CLIENT_KEY)), None]


async def test_the_anthropic_sdk_gets_in_with_x_api_key(keyed: Service) -> None:
    good = anthropic.AsyncAnthropic(api_key=ANTHROPIC_CLIENT_KEY, base_url=keyed.url, max_retries=0)
    async with good:
        answer = await good.messages.create(
            model="claude", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
        )
    assert answer.content
    bad = anthropic.AsyncAnthropic(api_key="bk-wrong", base_url=keyed.url, max_retries=0)
    async with bad:
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.create(
                model="claude", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
            )


async def test_only_the_gateway_needs_a_key(keyed: Service) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/livez", "/readyz", "/health", "/breakers", "/metrics"):
            async with http.get(f"{keyed.url}{path}") as response:
                assert response.status == 200, path
        async with http.post(f"{keyed.url}/v1/chat/completions", json={}) as response:
            assert response.status == 401
            body = await response.json()
    assert body["error"]["type"] == "authentication_error"
    assert OPENAI_CLIENT_KEY not in str(body)


def test_a_file_of_digests(tmp_path: Path) -> None:
    keys = tmp_path / "keys.sha256"
    keys.write_text(
        "# clients\n"
        f"{hashlib.sha256(b'alpha').hexdigest()}  # team a\n\n"
        f"{hashlib.sha256(b'beta').hexdigest().upper()}\n",
        encoding="utf-8",
    )
    config = parse_config(f'[gateway]\napi_keys_file = "{keys}"\n', environ={})
    loaded = GatewayKeys.from_config(config, {})
    assert loaded.identify("alpha") == hashlib.sha256(b"alpha").hexdigest()[:12]
    assert loaded.identify("beta") is not None
    assert loaded.identify("gamma") is None
    assert repr(loaded) == "<GatewayKeys 2 keys>"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not-a-digest\n", "line 1: expected a sha256 hex digest"),
        ("# only a comment\n", "holds no key digest"),
    ],
)
def test_a_bad_key_file_names_the_field_and_line(
    tmp_path: Path, content: str, message: str
) -> None:
    keys = tmp_path / "keys.sha256"
    keys.write_text(content, encoding="utf-8")
    config = parse_config(f'[gateway]\napi_keys_file = "{keys}"\n', environ={})
    with pytest.raises(ConfigError) as error:
        GatewayKeys.from_config(config, {})
    assert error.value.field == "gateway.api_keys_file"
    assert message in error.value.reason


def test_an_empty_key_variable_is_a_config_error() -> None:
    config = parse_config('[gateway]\napi_keys_env = "H6_NO_KEYS"\n', environ={})
    with pytest.raises(ConfigError) as error:
        GatewayKeys.from_config(config, {"H6_NO_KEYS": " , "})
    assert error.value.field == "gateway.api_keys_env"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.1.2.3", False), ("example.internal", False)],
)  # fmt: skip
def test_an_open_gateway_off_loopback_is_warned_about(
    host: str, loopback: bool, caplog: pytest.LogCaptureFixture
) -> None:
    assert is_loopback(host) is loopback
    with caplog.at_level(logging.WARNING, "service.gateway_auth"):
        warn_if_open(GatewayKeys(), host)
        warn_if_open(GatewayKeys([digest("k")]), host)
    assert len(caplog.records) == (0 if loopback else 1)
