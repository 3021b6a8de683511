"""The LLM client against a real HTTP server: answers, the fault map, breakers, fallbacks."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest

from actors import ActorSystem, CircuitState, ManualClock
from actors.errors import CircuitBreakerOpenError, ConfigurationError
from service.circuit_breaker import get_all_circuit_breakers, get_circuit_breaker
from service.llm.cooldown import DEFAULT_COOLDOWN
from service.llm_client import (
    DEFAULT_BREAKER_CONFIG,
    DEFAULT_FALLBACK_TEXT,
    APIError,
    AuthenticationError,
    CircuitOpenAPIError,
    InvalidRequestError,
    LLMResponse,
    MalformedResponseError,
    NetworkTimeoutError,
    ProviderConfigurationError,
    RateLimitError,
    ServiceUnavailableError,
    Usage,
    get_llm_client,
    llm_breaker_config,
)
from tests.service.llm.fake_provider import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    FakeProvider,
    Fault,
    fake_provider_in_thread,
)
from tests.service.llm.helpers import BACKUP_KEY, HELLO, KEY, WIRES, backup_entry, client_for

pytestmark = pytest.mark.anyio


# -- answers -------------------------------------------------------------------------------------


async def test_openai_answer_and_the_request_it_came_from(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system, model="gpt-test") as client:
        response = await client.complete_async(
            [{"role": "system", "content": "Be brief"}, *HELLO], temperature=0.2
        )
    assert response == LLMResponse(
        content="Hello from the fake provider",
        model="fake-gpt",
        provider="openai",
        usage=Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18),
        finish_reason="stop",
    )
    (request,) = fake.requests
    assert request.path == OPENAI_PATH
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "Be brief"}, *HELLO],
        "temperature": 0.2,
    }


async def test_anthropic_answer_moves_system_messages_and_sets_max_tokens(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("anthropic", fake, system, max_tokens=50) as client:
        response = await client.complete_async(
            [{"role": "system", "content": "Be brief"}, *HELLO], model="claude-test"
        )
    assert response == LLMResponse(
        content="Hello from the fake provider",
        model="fake-claude",
        provider="anthropic",
        usage=Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18),
        finish_reason="stop",  # end_turn, in the Chat Completions vocabulary
    )
    (request,) = fake.requests
    assert request.path == ANTHROPIC_PATH
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 50,
        "system": "Be brief",
        "messages": HELLO,
    }


def test_the_sync_facade_answers_from_a_plain_thread() -> None:
    with (
        fake_provider_in_thread() as fake,
        get_llm_client(
            "openai", api_key=KEY, base_url=fake.openai_base_url, enable_circuit_breaker=False
        ) as client,
    ):
        assert client.complete(HELLO).content == "Hello from the fake provider"
        assert client.complete(HELLO).provider == "openai"
    assert fake.count == 2


# -- every status and fault -> its error class, and what the breaker makes of it ----------------

COUNTED, IGNORED = True, False

STATUS_CASES = [
    (400, InvalidRequestError, IGNORED),
    (401, AuthenticationError, IGNORED),
    (403, AuthenticationError, IGNORED),
    (404, InvalidRequestError, IGNORED),
    (408, NetworkTimeoutError, COUNTED),
    (409, InvalidRequestError, IGNORED),
    (413, InvalidRequestError, IGNORED),
    (422, InvalidRequestError, IGNORED),
    (429, RateLimitError, IGNORED),
    (500, ServiceUnavailableError, COUNTED),
    (501, ServiceUnavailableError, COUNTED),
    (502, ServiceUnavailableError, COUNTED),
    (503, ServiceUnavailableError, COUNTED),
    (504, ServiceUnavailableError, COUNTED),
    (529, ServiceUnavailableError, COUNTED),
    (302, APIError, COUNTED),
]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("status", "error", "counted"), STATUS_CASES)
async def test_each_status_maps_to_its_error_class(
    fake: FakeProvider,
    system: ActorSystem,
    wire: str,
    status: int,
    error: type[APIError],
    counted: bool,
) -> None:
    fake.inject(Fault.status_code(status))
    async with client_for(wire, fake, system) as client:
        with pytest.raises(APIError) as caught:
            await client.complete_async(HELLO)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert type(caught.value) is error
    assert (caught.value.provider, caught.value.status) == (wire, status)
    assert f"fake error {status}" in caught.value.message
    assert metrics is not None
    assert (metrics["failed_calls"], metrics["ignored_calls"]) == (int(counted), int(not counted))
    assert fake.count == 1


FAULT_CASES = [
    (Fault.html(502), ServiceUnavailableError, 502),
    (Fault.reset(), NetworkTimeoutError, None),
    (Fault.hang(), NetworkTimeoutError, None),
    (Fault.short_body(), NetworkTimeoutError, None),
    (Fault.bad_json(), MalformedResponseError, None),
    (Fault.wrong_shape(), MalformedResponseError, None),
]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("fault", "error", "status"), FAULT_CASES, ids=lambda value: getattr(value, "kind", None)
)
async def test_each_transport_fault_maps_to_its_error_class_and_counts(
    fake: FakeProvider,
    system: ActorSystem,
    wire: str,
    fault: Fault,
    error: type[APIError],
    status: int | None,
) -> None:
    fake.inject(fault)
    async with client_for(wire, fake, system) as client:
        with pytest.raises(APIError) as caught:
            await client.complete_async(HELLO, timeout=0.3)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert type(caught.value) is error
    assert (caught.value.provider, caught.value.status) == (wire, status)
    assert metrics is not None and metrics["failed_calls"] == 1


async def test_a_refused_connection_is_a_network_error(system: ActorSystem) -> None:
    async with FakeProvider() as fake:
        url = fake.openai_base_url  # nothing listens there once the server has stopped
    async with get_llm_client("openai", api_key=KEY, base_url=url, system=system) as client:
        with pytest.raises(NetworkTimeoutError, match="connection failed"):
            await client.complete_async(HELLO)


async def test_the_html_page_of_a_proxy_becomes_the_message(
    fake: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.html(502))
    async with client_for("openai", fake, system) as client:
        with pytest.raises(ServiceUnavailableError, match="Bad gateway"):
            await client.complete_async(HELLO)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after": "7"}, 7.0),
        ({"retry_after_ms": "1500", "retry_after": "7"}, 1.5),
        ({"x_ratelimit_reset_requests": "1m30s", "x_ratelimit_remaining_requests": "0"}, 90.0),
        ({}, DEFAULT_COOLDOWN),  # no hint: the length of the cooldown it started
    ],
)
async def test_rate_limits_carry_retry_after(
    fake: FakeProvider, system: ActorSystem, headers: dict[str, str], expected: float | None
) -> None:
    fake.inject(Fault.status_code(429, **headers))
    async with client_for("openai", fake, system) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.complete_async(HELLO)
    assert caught.value.retry_after == expected


# -- the breaker ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (APIError, COUNTED),
        (ServiceUnavailableError, COUNTED),
        (NetworkTimeoutError, COUNTED),
        (MalformedResponseError, COUNTED),
        (RateLimitError, IGNORED),
        (InvalidRequestError, IGNORED),
        (AuthenticationError, IGNORED),
        (ProviderConfigurationError, IGNORED),
    ],
)
def test_the_default_breaker_policy(error: type[APIError], counted: bool) -> None:
    assert DEFAULT_BREAKER_CONFIG.counts_as_failure(error("x", provider="p")) is counted


async def test_rate_limits_never_open_the_breaker(
    fake: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    fake.inject(Fault.status_code(429, retry_after="1"), times=12)
    async with client_for("openai", fake, system) as client:
        for _ in range(12):
            with pytest.raises(RateLimitError):
                await client.complete_async(HELLO, use_fallback=False)
            clock.advance(1.0)  # the cooldown ends
        metrics = await client.get_circuit_breaker_metrics_async()
        assert (await client.complete_async(HELLO)).is_fallback is False
    assert metrics is not None
    assert (metrics["state"], metrics["ignored_calls"], metrics["failed_calls"]) == (
        "closed",
        12,
        0,
    )
    assert (metrics["rate_limited"], metrics["cooldown_skipped"]) == (12, 0)
    assert fake.count == 13


async def test_five_503s_open_the_breaker_and_the_sixth_call_sends_nothing(
    fake: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(503), times=5)
    async with client_for("openai", fake, system) as client:
        for _ in range(5):
            with pytest.raises(ServiceUnavailableError):
                await client.complete_async(HELLO)
        assert fake.count == 5
        with pytest.raises(CircuitOpenAPIError) as caught:
            await client.complete_async(HELLO, use_fallback=False)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert fake.count == 5
    error = caught.value
    assert isinstance(error, APIError) and isinstance(error, CircuitBreakerOpenError)
    assert (error.provider, error.breaker_name, error.retry_after) == (
        "openai",
        "openai_client",
        60.0,
    )
    assert metrics is not None
    assert (metrics["state"], metrics["failed_calls"], metrics["rejected_calls"]) == ("open", 5, 1)
    assert metrics["failure_rate"] == 1.0


async def test_the_half_open_probe_reaches_the_server_and_recovery_closes_the_breaker(
    fake: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    config = llm_breaker_config(timeout_duration=30.0, success_threshold=2)
    fake.inject(Fault.status_code(503), times=5)
    async with client_for("openai", fake, system, circuit_breaker_config=config) as client:
        for _ in range(5):
            with pytest.raises(ServiceUnavailableError):
                await client.complete_async(HELLO)
        assert (await client.complete_async(HELLO)).is_fallback
        clock.advance(30.0)
        assert (await client.get_circuit_breaker_metrics_async() or {})["state"] == "half_open"
        first = await client.complete_async(HELLO)
        assert fake.count == 6  # the probe reached the server
        assert (await client.get_circuit_breaker_metrics_async() or {})["state"] == "half_open"
        second = await client.complete_async(HELLO)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert not first.is_fallback and not second.is_fallback
    assert metrics is not None and metrics["state"] == "closed"
    assert fake.count == 7


async def test_a_failed_probe_opens_the_breaker_again(
    fake: FakeProvider, system: ActorSystem, clock: ManualClock
) -> None:
    config = llm_breaker_config(failure_threshold=1, timeout_duration=30.0)
    fake.inject(Fault.status_code(503), times=2)
    async with client_for("openai", fake, system, circuit_breaker_config=config) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.complete_async(HELLO)
        clock.advance(30.0)
        with pytest.raises(ServiceUnavailableError):
            await client.complete_async(HELLO)  # the probe
        assert (await client.complete_async(HELLO)).is_fallback
    assert fake.count == 2


# -- fallback text versus raising -----------------------------------------------------------------


async def test_an_open_breaker_gives_the_fallback_text_or_raises(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system, model="gpt-test") as client:
        await client.force_circuit_open_async()
        response = await client.complete_async(HELLO)
        with pytest.raises(CircuitOpenAPIError) as caught:
            await client.complete_async(HELLO, use_fallback=False)
    assert response == LLMResponse(
        content=DEFAULT_FALLBACK_TEXT, model="gpt-test", provider="openai", is_fallback=True
    )
    assert caught.value.retry_after == float("inf")  # forced open: no probe will come
    assert fake.count == 0


async def test_the_fallback_text_is_configurable(fake: FakeProvider, system: ActorSystem) -> None:
    async with client_for("openai", fake, system, fallback_text="Back soon.") as client:
        client.force_circuit_open()
        assert (await client.complete_async(HELLO)).content == "Back soon."


async def test_a_failure_that_has_not_opened_the_breaker_is_raised_even_with_fallback(
    fake: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(503))
    async with client_for("openai", fake, system) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.complete_async(HELLO, use_fallback=True)


# -- the fallback chain ---------------------------------------------------------------------------


async def test_the_chain_answers_from_the_second_provider_while_the_first_is_open(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(503), times=5)
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        answers = [await client.complete_async(HELLO) for _ in range(5)]  # each 503 passes on
        assert (await client.get_circuit_breaker_metrics_async() or {})["state"] == "open"
        while_open = await client.complete_async(HELLO)
    assert {(a.provider, a.content, a.is_fallback) for a in answers} == {
        ("anthropic", "Hello from the backup", False)
    }
    assert (while_open.provider, while_open.is_fallback) == ("anthropic", False)
    assert (fake.count, backup.count) == (5, 6)
    assert backup.requests[0].headers["x-api-key"] == BACKUP_KEY
    assert backup.requests[0].body["model"] == "claude-3-5-haiku-latest"


async def test_the_chain_does_not_pass_on_the_callers_own_errors(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    fake.inject(Fault.status_code(400))
    fake.inject(Fault.status_code(401))
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        for error in (InvalidRequestError, AuthenticationError):
            with pytest.raises(error):
                await client.complete_async(HELLO)
    assert backup.count == 0


async def test_when_every_breaker_is_open_the_chain_gives_the_fallback_text_or_raises(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        client.force_circuit_open()
        system.get("anthropic_client").force_open()  # type: ignore[union-attr]
        response = await client.complete_async(HELLO)
        with pytest.raises(CircuitOpenAPIError) as caught:
            await client.complete_async(HELLO, use_fallback=False)
    assert (response.is_fallback, response.provider) == (True, "openai")
    assert caught.value.provider == "openai"  # the soonest to reopen (here a tie: the first)
    assert any("anthropic" in note for note in caught.value.__notes__)
    assert (fake.count, backup.count) == (0, 0)


async def test_the_last_providers_failure_is_raised_with_the_earlier_ones_as_notes(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem
) -> None:
    backup.inject(Fault.status_code(503))
    chain = [backup_entry(backup)]
    async with client_for("openai", fake, system, fallback_providers=chain) as client:
        client.force_circuit_open()
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.complete_async(HELLO)
    assert caught.value.provider == "anthropic"
    assert any("CircuitOpenAPIError" in note for note in caught.value.__notes__)


async def test_a_chain_of_provider_names_reads_each_from_the_environment(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", BACKUP_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", backup.anthropic_base_url)
    async with client_for("openai", fake, system, fallback_providers=["anthropic"]) as client:
        client.force_circuit_open()
        response = await client.complete_async(HELLO)
    assert (response.provider, response.content) == ("anthropic", "Hello from the backup")
    assert client.providers == ["openai", "anthropic"]


# -- configuration and keys -----------------------------------------------------------------------


async def test_keys_and_base_urls_come_from_the_environment_when_the_client_is_made(
    fake: FakeProvider, system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
    client = get_llm_client("openai", system=system)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-changed-later")
    async with client:
        await client.complete_async(HELLO)
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    async with get_llm_client("openai", system=system) as later:
        await later.complete_async(HELLO)
    assert fake.requests[1].headers["Authorization"] == "Bearer sk-changed-later"


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")]
)
async def test_a_missing_key_is_a_clear_error_at_first_use(
    fake: FakeProvider, system: ActorSystem, provider: str, variable: str
) -> None:
    client = client_for(provider, fake, system, api_key=None)  # made without complaint
    async with client:
        with pytest.raises(ProviderConfigurationError, match=variable):
            await client.complete_async(HELLO)
    assert fake.count == 0


async def test_a_missing_key_in_the_chain_is_reported_before_anything_is_sent(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system, fallback_providers=["anthropic"]) as client:
        with pytest.raises(ProviderConfigurationError, match="ANTHROPIC_API_KEY"):
            await client.complete_async(HELLO)
    assert fake.count == 0


async def test_openai_compatible_needs_no_key_and_never_sends_the_openai_key(
    fake: FakeProvider, system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    options: dict[str, Any] = {"base_url": fake.openai_base_url, "system": system}
    async with get_llm_client("openai_compatible", name="local", **options) as nameless:
        with pytest.raises(ProviderConfigurationError, match="model"):
            await nameless.complete_async(HELLO)
    async with get_llm_client("openai_compatible", model="llama", name="local", **options) as ok:
        response = await ok.complete_async(HELLO)
    assert response.provider == "local"
    assert ok.circuit_breaker is not None and ok.circuit_breaker.name == "local_client"
    (request,) = fake.requests
    assert "Authorization" not in request.headers
    assert "stream_options" not in request.body


async def test_keys_never_appear_in_errors_logs_or_reprs(
    fake: FakeProvider, backup: FakeProvider, system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.inject(Fault.status_code(401))  # the fake echoes the key in its error message
    fake.inject(Fault.status_code(503), times=5)
    chain = [backup_entry(backup)]
    client = client_for("openai", fake, system, fallback_providers=chain)
    errors: list[BaseException] = []
    async with client:
        with pytest.raises(AuthenticationError) as caught:
            await client.complete_async(HELLO)
        errors.append(caught.value)
        for _ in range(5):
            await client.complete_async(HELLO)  # answered by the backup
        backup.inject(Fault.stream_error("overloaded_error", after=1))
        with pytest.raises(ServiceUnavailableError) as streamed:
            async for _ in client.stream_async(HELLO):
                pass
        errors.append(streamed.value)
        texts = [
            repr(client),
            str(client.circuit_breaker),
            repr(client.chain.links[0].provider.settings),
        ]
    assert "[REDACTED]" in str(errors[0])
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"  # it was sent, though
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records  # the client did log
    for text in texts:
        assert KEY not in text and BACKUP_KEY not in text


async def test_invalid_options_are_refused_naming_the_option(system: ActorSystem) -> None:
    with pytest.raises(ConfigurationError, match="api_kye"):
        get_llm_client("openai", api_kye="x", system=system)
    with pytest.raises(ConfigurationError, match="timeout"):
        get_llm_client("openai", timeout=0, system=system)
    with pytest.raises(ConfigurationError, match="provider"):
        get_llm_client("gemini", system=system)
    with pytest.raises(ConfigurationError, match=r"fallback_providers\[0\]"):
        get_llm_client("openai", fallback_providers=[{"provider": "anthropic", "x": 1}])
    with pytest.raises(ConfigurationError, match="already in the chain"):
        get_llm_client("openai", fallback_providers=["openai"], system=system)


async def test_invalid_messages_are_refused_before_anything_is_sent(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system) as client:
        with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.role"):
            await client.complete_async([{"role": "bot", "content": "hi"}])
        with pytest.raises(InvalidRequestError, match="at least one"):
            await client.complete_async([])
        with pytest.raises(InvalidRequestError, match="stream"):
            await client.complete_async(HELLO, stream=True)
        metrics = await client.get_circuit_breaker_metrics_async()
    assert fake.count == 0
    assert metrics is not None and metrics["total_calls"] == 0


# -- breakers in the registry ---------------------------------------------------------------


async def test_clients_of_one_provider_share_its_registry_breaker(
    fake: FakeProvider, unique_name: str
) -> None:
    first = get_llm_client("openai", name=unique_name, api_key=KEY, base_url=fake.openai_base_url)
    second = get_llm_client("openai", name=unique_name, api_key=KEY, base_url=fake.openai_base_url)
    async with first, second:
        breaker = get_circuit_breaker(f"{unique_name}_client")
        assert first.circuit_breaker is breaker and second.circuit_breaker is breaker
        assert breaker.config == llm_breaker_config()
        first.force_circuit_open()
        assert (await second.complete_async(HELLO)).is_fallback
        second.reset_circuit_breaker()
        assert not (await first.complete_async(HELLO)).is_fallback
    assert f"{unique_name}_client" in get_all_circuit_breakers()


async def test_each_provider_of_the_chain_has_its_own_breaker_named_provider_client(
    system: ActorSystem,
) -> None:
    with get_llm_client("openai", system=system, fallback_providers=["anthropic"]) as client:
        assert client.circuit_breaker is system.get("openai_client")
    assert set(system.breakers()) == {"openai_client", "anthropic_client"}


async def test_a_conflicting_breaker_config_is_refused_and_no_config_reuses_the_breaker(
    system: ActorSystem,
) -> None:
    existing = system.breaker("openai_client", llm_breaker_config(failure_threshold=2))
    with pytest.raises(ValueError, match="different config"):
        get_llm_client("openai", system=system, circuit_breaker_config=llm_breaker_config())
    with get_llm_client("openai", system=system) as client:
        assert client.circuit_breaker is existing


async def test_without_a_breaker_calls_go_straight_to_the_provider(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.status_code(503), times=8)
    url = fake.openai_base_url
    async with get_llm_client("openai", False, api_key=KEY, base_url=url) as client:
        for _ in range(8):
            with pytest.raises(ServiceUnavailableError):
                await client.complete_async(HELLO)
        assert client.get_circuit_breaker_metrics() is None
        client.force_circuit_open()  # nothing to open: a no-op
        assert not (await client.complete_async(HELLO)).is_fallback
    assert fake.count == 9


async def test_metrics_have_state_and_failure_rate(fake: FakeProvider, system: ActorSystem) -> None:
    async with client_for("openai", fake, system) as client:
        await client.complete_async(HELLO)
        fake.inject(Fault.status_code(500))
        with pytest.raises(ServiceUnavailableError):
            await client.complete_async(HELLO)
        metrics = client.get_circuit_breaker_metrics()
        client.force_circuit_closed()
        forced = client.get_circuit_breaker_metrics()
    assert metrics is not None and forced is not None
    assert (metrics["state"], metrics["failure_rate"]) == ("closed", 0.5)
    assert forced["forced"] is True
    assert CircuitState(forced["state"]) is CircuitState.CLOSED
