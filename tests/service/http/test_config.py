"""The config file: defaults, overrides, and a message naming the field for every mistake."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from actors.config import CircuitBreakerConfig
from service.__main__ import configure
from service.config import (
    BreakerSection,
    ConfigError,
    ServiceConfig,
    SimulatorSection,
    TelemetrySection,
    clean_secrets,
    config_warnings,
    default_config_text,
    load_config,
    parse_config,
)
from service.config import ServiceSection as ServiceTable

ROOT = Path(__file__).resolve().parents[3]

PROVIDER = '[providers.p]\nkind = "openai"\nmodel = "m"\n'


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=environ or {})
    return str(caught.value)


def test_the_bundled_defaults_load_and_route_both_providers() -> None:
    config = load_config(environ={})
    assert config.service.host == "127.0.0.1"
    assert config.service.port == 8080
    assert config.service.max_body_bytes == 20 * 1024 * 1024
    assert config.service.max_admin_body_bytes == 64 * 1024
    assert set(config.providers) == {"openai", "anthropic"}
    assert config.routes["gpt-4o-mini"].provider == "openai"
    assert config.routes["gpt-4o-mini"].fallbacks == ["anthropic"]
    assert config.provider_breaker("anthropic") == "anthropic"
    assert config.provider_breaker("openai") == "default"


def test_struct_defaults_match_the_bundled_file() -> None:
    # A file that omits a table gets the struct defaults: they must say what the docs say.
    raw = tomllib.loads(default_config_text())
    for key, struct in (
        ("service", ServiceTable),
        ("telemetry", TelemetrySection),
        ("simulator", SimulatorSection),
    ):
        assert msgspec.convert(raw[key], struct) == struct(), key


def test_named_breakers_inherit_from_default() -> None:
    config = parse_config(
        "[breakers.default]\nfailure_threshold = 7\ntimeout_duration = 9\n"
        "[breakers.fast]\ntimeout_duration = 1.5\nfailure_rate_threshold = 0.5\n"
        + PROVIDER
        + 'breaker = "fast"\n',
        environ={},
    )
    fast = config.breaker_config("fast")
    assert (fast.failure_threshold, fast.timeout_duration) == (7, 1.5)
    assert fast.failure_rate_threshold == 0.5
    assert config.breaker_config("default").timeout_duration == 9
    policy = config.breaker_config("fast", ignore_exceptions=(KeyError,))
    assert policy.ignore_exceptions == (KeyError,)


def test_an_empty_file_is_valid_and_has_a_default_breaker() -> None:
    config = parse_config("", environ={})
    assert config.breaker_config("default") == CircuitBreakerConfig()
    assert config.routes == {}


def test_breaker_tables_accept_every_numeric_policy_of_the_breaker() -> None:
    # Keeps the file's vocabulary in step with CircuitBreakerConfig as policies are added.
    code_only = {"expected_exceptions", "ignore_exceptions", "is_failure", "failure_predicate"}
    assert set(BreakerSection.__struct_fields__) == (
        set(CircuitBreakerConfig.__struct_fields__) - code_only
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[breakers.openai]\nfailure_threshold = 0\n",
            "breakers.openai.failure_threshold: expected int >= 1, got 0",
        ),
        (
            "[breakers.default]\ntimeout_duration = -1\n",
            "breakers.default.timeout_duration: expected a number of seconds > 0, got -1.0",
        ),
        (
            "[breakers.x]\nfailure_threshold = 2.5\n",
            "breakers.x.failure_threshold: expected int, got float",
        ),
        (
            "[breakers.x]\nfailure_treshold = 2\n",
            'breakers.x.failure_treshold: unknown field "failure_treshold" '
            '(did you mean "failure_threshold"?)',
        ),
        (
            "[breakers.x]\ntimeout_duration = 10\nmax_timeout_duration = 5\n",
            "breakers.x.max_timeout_duration: expected >= timeout_duration (10.0), got 5.0",
        ),
        ("[service]\nport = 70000\n", "service.port: expected int <= 65535, got 70000"),
        ('[service]\nport = "80"\n', "service.port: expected int, got str"),
        ('[service]\nhost = ""\n', 'service.host: expected str of length >= 1, got ""'),
        ("[service]\nshutdown_grace = 0\n", "service.shutdown_grace: expected float > 0.0, got 0"),
        ("[servce]\n", 'servce: unknown table "servce" (did you mean "service"?)'),
        ("service = 3\n", "service: expected object, got int"),
        ("routes = 3\n", "routes: expected a table, got 3"),
        (
            '[providers.p]\nkind = "azure"\nmodel = "m"\n',
            'providers.p.kind: expected one of "openai", "anthropic", "openai_compatible", '
            'got "azure"',
        ),
        ('[providers.p]\nkind = "openai"\n', "providers.p.model: required field is missing"),
        (
            PROVIDER + 'breaker = "nope"\n',
            'providers.p.breaker: unknown breaker table "nope" (known: default)',
        ),
        (
            PROVIDER + '[routes."gpt-4o.mini"]\nprovider = "q"\n',
            'routes."gpt-4o.mini".provider: unknown provider "q" (known: p)',
        ),
        (
            PROVIDER + '[routes.m]\nprovider = "p"\nfallbacks = ["p"]\n',
            "routes.m.fallbacks[0]: provider 'p' is already in the route",
        ),
        (
            PROVIDER + '[routes.m]\nprovider = "p"\nfallbacks = [1]\n',
            "routes.m.fallbacks[0]: expected str, got int",
        ),
        (
            "[telemetry]\ncall_span_ratio = 2\n",
            "telemetry.call_span_ratio: expected float <= 1.0, got 2",
        ),
        (
            "[service\n",
            "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)",
        ),
    ],
)
def test_every_mistake_names_its_field(text: str, message: str) -> None:
    assert error_of(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[service]\nshutdown_grace = inf\n",
            "service.shutdown_grace: expected a finite number, got inf",
        ),
        (
            "[service]\nheader_timeout = nan\n",
            "service.header_timeout: expected float > 0.0, got NaN",
        ),
        (PROVIDER + "timeout = inf\n", "providers.p.timeout: expected a finite number, got inf"),
        (
            "[breakers.default]\ntimeout_duration = inf\n",
            "breakers.default.timeout_duration: expected a finite number, got inf",
        ),
        ("[simulator]\nlatency = inf\n", "simulator.latency: expected a finite number, got inf"),
        (
            '[telemetry]\nprotocol = "udp"\n',
            'telemetry.protocol: expected one of "http/protobuf", "grpc", got "udp"',
        ),
        (
            "[service]\nevents_interval = 1e-9\n",
            "service.events_interval: expected float >= 0.1, got 1e-09",
        ),
        (
            "[service]\nmax_json_depth = 100000\n",
            "service.max_json_depth: expected int <= 500, got 100000",
        ),
        ("[service]\nmax_connections = 0\n", "service.max_connections: expected int >= 1, got 0"),
        (
            PROVIDER + 'base_url = "file:///etc/passwd"\n',
            'providers.p.base_url: expected an http:// or https:// URL, got scheme "file"',
        ),
        (
            PROVIDER + 'base_url = "api.openai.com/v1"\n',
            'providers.p.base_url: expected an http:// or https:// URL, got scheme ""',
        ),
        (
            PROVIDER + 'base_url = "https://user:hunter2@api.example.com/v1"\n',
            "providers.p.base_url: must not carry credentials (user:pass@): put the key in the "
            "variable named by api_key_env",
        ),
        (PROVIDER + 'base_url = "http:///v1"\n', "providers.p.base_url: the URL has no host"),
        (
            PROVIDER + "[breakers.q]\nfailure_threshold = 3\n",
            "breakers.q: no provider uses this table: name it like a provider, or set that "
            'provider\'s breaker = "q" (providers: p)',
        ),
    ],
)
def test_values_that_cannot_work_are_refused_at_start(text: str, message: str) -> None:
    assert error_of(text) == message
    assert "hunter2" not in message


def test_a_config_without_routes_is_valid_but_warned_about() -> None:
    assert config_warnings(parse_config(PROVIDER, environ={})) == [
        "the configuration has no [routes]: every gateway request will answer 404 "
        "(providers defined: p)"
    ]
    assert config_warnings(load_config(environ={})) == []


KEYED = PROVIDER + 'api_key_env = "P_KEY"\n[providers.a]\nkind = "anthropic"\nmodel = "m"\n'
DEFAULT_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def secrets(environ: dict[str, str]) -> dict[str, str]:
    return clean_secrets(
        parse_config(KEYED, environ={}),
        environ,
        admin_token_env="BREAKERD_ADMIN_TOKEN",
        default_key_env=DEFAULT_KEYS,
    )


def test_secrets_lose_surrounding_whitespace_such_as_a_files_trailing_newline() -> None:
    cleaned = secrets(
        {
            "P_KEY": "sk-abc\n",
            "ANTHROPIC_API_KEY": "  ak-1\r\n",
            "BREAKERD_ADMIN_TOKEN": " " * 3,
            "OTHER": " left alone ",
        }
    )
    assert cleaned == {"P_KEY": "sk-abc", "ANTHROPIC_API_KEY": "ak-1", "OTHER": " left alone "}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"P_KEY": "sk-a\nb"},
            "providers.p.api_key_env (P_KEY): the value holds a space, a control character or "
            "a non-ASCII character; it cannot be sent in an HTTP header",
        ),
        (
            {"ANTHROPIC_API_KEY": "ak\x00x"},
            "providers.a.api_key_env (ANTHROPIC_API_KEY): the value holds a space, a control "
            "character or a non-ASCII character; it cannot be sent in an HTTP header",
        ),
        (
            {"BREAKERD_ADMIN_TOKEN": "my token with spaces"},
            "BREAKERD_ADMIN_TOKEN: the value holds a space, a control character or a non-ASCII "
            "character; it cannot be sent in an HTTP header",
        ),
        (
            {"BREAKERD_ADMIN_TOKEN": "short-token\n"},
            "BREAKERD_ADMIN_TOKEN: the admin token must be at least 16 characters long",
        ),
    ],
)
def test_unusable_secrets_are_refused_without_showing_them(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        secrets(environ)
    assert str(caught.value) == message


def test_environment_overrides_documented_keys() -> None:
    config = parse_config(
        "[service]\nport = 1\n",
        environ={
            "BREAKERD_PORT": "9090",
            "BREAKERD_HOST": "::1",
            "BREAKERD_SHUTDOWN_GRACE": "2.5",
            "BREAKERD_TELEMETRY": "true",
            "BREAKERD_SIMULATOR": "off",
            "BREAKERD_MAX_BODY_BYTES": "10",
        },
    )
    assert (config.service.port, config.service.host) == (9090, "::1")
    assert (config.service.shutdown_grace, config.service.max_body_bytes) == (2.5, 10)
    assert config.telemetry.enabled is True
    assert config.simulator.mode == "off"


def test_bad_environment_values_name_the_variable() -> None:
    assert error_of("", {"BREAKERD_PORT": "eighty"}) == 'BREAKERD_PORT: expected int, got "eighty"'
    assert (
        error_of("", {"BREAKERD_PORT": "99999"})
        == "service.port: expected int <= 65535, got 99999 (from BREAKERD_PORT)"
    )
    assert error_of("", {"BREAKERD_SIMULATOR": "maybe"}) == (
        'simulator.mode: expected one of "auto", "on", "off", got "maybe" (from BREAKERD_SIMULATOR)'
    )


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml", environ={})
    assert "cannot read the config file" in str(caught.value)
    assert caught.value.source == str(tmp_path / "absent.toml")


def test_the_config_is_frozen() -> None:
    config = ServiceConfig()
    with pytest.raises(AttributeError):
        config.service = ServiceTable()  # type: ignore[misc]


def run_service(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKERD_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_invalid_file_stops_the_service_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[breakers.openai]\nfailure_threshold = 0\n")
    result = run_service("--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"breakerd: invalid configuration in {bad}: "
        "breakers.openai.failure_threshold: expected int >= 1, got 0"
    )
    assert "Traceback" not in result.stderr


def test_a_short_admin_token_stops_the_service_with_status_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKERD_")}
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"],
        cwd=ROOT,
        env={**env, "BREAKERD_ADMIN_TOKEN": "tok"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(
        "BREAKERD_ADMIN_TOKEN: the admin token must be at least 16 characters long"
    )
    assert "Traceback" not in result.stderr


def test_help_describes_the_command_line() -> None:
    result = run_service("serve", "--help")
    assert result.returncode == 0
    for option in ("--config", "--host", "--port", "BREAKERD_ADMIN_TOKEN"):
        assert option in result.stdout


def test_command_line_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[service]\nport = 9000\n")
    config = configure(["--config", str(good), "--port", "0", "--host", "::1"])
    assert (config.service.host, config.service.port) == ("::1", 0)
    with pytest.raises(ConfigError) as caught:
        configure(["--config", str(good), "--port", "70000"])
    assert str(caught.value) == "service.port: expected int <= 65535, got 70000 (from --port)"
    assert caught.value.source == str(good)
    with pytest.raises(ConfigError, match=r"^service.host: expected str of length >= 1"):
        configure(["--host", ""])
