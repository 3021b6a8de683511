"""The service's configuration: one TOML file, decoded once into frozen, typed structs.

Where values come from, later winning: the struct defaults below, the TOML file (``--config
PATH``, else the bundled ``service/defaults.toml``), the documented environment variables in
:data:`ENV_OVERRIDES`, and finally the command line (``--host``, ``--port``).

Validation happens here and only here.  Every section is decoded with msgspec
(``forbid_unknown_fields=True``) and every breaker section is turned into a real
:class:`~actors.config.CircuitBreakerConfig`, so that the breaker's own rules apply.  Any
mistake raises :class:`ConfigError` whose message starts with the dotted path of the bad field
(``breakers.openai.failure_threshold: expected int >= 1, got 0``); the entry point prints it and
exits with status 2.  msgspec reports keys of a table as ``[...]``, which is why the named
tables (``breakers``, ``providers``, ``routes``) are decoded entry by entry: the path then
names the entry.

Secrets are not part of this: API keys and the admin token stay in the environment, and the
config only names the variables that hold them.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
import typing
import urllib.parse
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from actors.config import CircuitBreakerConfig
from actors.errors import ConfigurationError

S = TypeVar("S", bound=msgspec.Struct)

ProviderKind = Literal["openai", "anthropic", "openai_compatible"]
SimulatorMode = Literal["auto", "on", "off"]

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

DEFAULT_BREAKER = "default"


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config table: immutable, and strict about field names."""


class ServiceSection(_Section, frozen=True):
    """``[service]``: where the HTTP server listens and how it behaves at its edges.

    The limits bound what one client can hold (see ``service.server`` and the README's
    security section): ``max_body_bytes`` for ``/v1/*`` bodies (multimodal requests carry
    images), ``max_admin_body_bytes`` for every other route, ``max_json_depth`` for the nesting
    of any JSON body, ``max_connections`` open at once (more are answered 503 and closed),
    ``header_timeout`` to receive a request's head, ``body_timeout`` to receive its body,
    ``keepalive_timeout`` for an idle connection between requests.
    """

    host: NonEmpty = "127.0.0.1"
    port: Port = 8080
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 20 * 1024 * 1024
    max_admin_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024
    max_json_depth: Annotated[int, msgspec.Meta(ge=2, le=500)] = 128
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1000
    header_timeout: PositiveSeconds = 10.0
    body_timeout: PositiveSeconds = 60.0
    keepalive_timeout: PositiveSeconds = 75.0
    shutdown_grace: PositiveSeconds = 10.0
    # A floor: a metrics snapshot of every breaker per tick, per /events client.
    events_interval: Annotated[float, msgspec.Meta(ge=0.1)] = 5.0


class BreakerSection(_Section, frozen=True):
    """``[breakers.NAME]``: the breaker policy; unset fields come from ``[breakers.default]``
    (and from :class:`CircuitBreakerConfig`'s defaults beyond that).  The field names and
    meanings are :class:`CircuitBreakerConfig`'s; the exception policy is not configurable here
    because it belongs to the code that makes the calls (the LLM client's error classes).

    The ranges are checked by ``CircuitBreakerConfig`` itself, so the file and the library
    cannot disagree about what is valid.
    """

    failure_threshold: int | msgspec.UnsetType = msgspec.UNSET
    success_threshold: int | msgspec.UnsetType = msgspec.UNSET
    timeout_duration: float | msgspec.UnsetType = msgspec.UNSET
    reset_timeout: float | msgspec.UnsetType = msgspec.UNSET
    monitoring_window: float | msgspec.UnsetType = msgspec.UNSET
    half_open_max_calls: int | msgspec.UnsetType = msgspec.UNSET
    failure_rate_threshold: float | msgspec.UnsetType = msgspec.UNSET
    sliding_window_size: int | msgspec.UnsetType = msgspec.UNSET
    minimum_calls: int | msgspec.UnsetType = msgspec.UNSET
    slow_call_duration: float | msgspec.UnsetType = msgspec.UNSET
    slow_call_rate_threshold: float | msgspec.UnsetType = msgspec.UNSET
    call_timeout: float | msgspec.UnsetType = msgspec.UNSET
    backoff_multiplier: float | msgspec.UnsetType = msgspec.UNSET
    max_timeout_duration: float | msgspec.UnsetType = msgspec.UNSET
    backoff_jitter: bool | msgspec.UnsetType = msgspec.UNSET
    max_half_open_duration: float | msgspec.UnsetType = msgspec.UNSET

    def settings(self) -> dict[str, Any]:
        """The fields this section sets, by name."""
        return {
            name: value
            for name, value in msgspec.structs.asdict(self).items()
            if value is not msgspec.UNSET
        }


class ProviderSection(_Section, frozen=True):
    """``[providers.NAME]``: one upstream the gateway may call.

    ``base_url``: None means the provider's standard URL (or ``OPENAI_BASE_URL`` /
    ``ANTHROPIC_BASE_URL``).  ``api_key_env`` names the environment variable holding the key
    (empty: the upstream needs none, e.g. a local Ollama).  ``model`` is the upstream model used
    when this provider answers as a fallback for a route of another provider.  ``breaker`` names
    the ``[breakers.*]`` table for its breaker (default: the table named like the provider if
    there is one, else ``default``).  ``pool_size``: connections to it at once (all routes);
    ``pool_timeout``: seconds a request waits for one before a 503 (local saturation, never
    counted by the breaker; ``timeout`` starts once a connection is held).
    """

    kind: ProviderKind
    model: NonEmpty
    base_url: str | None = None
    api_key_env: str = ""
    timeout: PositiveSeconds = 60.0
    connect_timeout: PositiveSeconds = 5.0
    breaker: str | None = None
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    pool_timeout: PositiveSeconds = 10.0


class RouteSection(_Section, frozen=True):
    """``[routes."MODEL"]``: what a request's ``model`` field selects.

    ``provider`` answers first with ``model`` (default: the route's own name); each of
    ``fallbacks`` is tried in order, with its provider's ``model``, when the ones before it are
    open or fail.  ``fallback_on_rate_limit``: a 429 (or a provider cooling down after one)
    moves the request on to the next provider; false answers the 429 at once.
    """

    provider: NonEmpty
    model: str | None = None
    fallbacks: list[str] = []
    fallback_on_rate_limit: bool = True


class TelemetrySection(_Section, frozen=True):
    """``[telemetry]``: OpenTelemetry metrics and traces (see ``telemetry.setup``).

    Which exporters run comes from the standard ``OTEL_METRICS_EXPORTER`` /
    ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, ``console`` or ``none``); headers, timeouts
    and certificates from the other ``OTEL_*`` variables.  ``protocol``, ``endpoint`` and
    ``service_name``, when set, win over their variables.  ``call_span_ratio`` samples per-call
    spans (0 turns them off; breaker metrics and open-period spans do not depend on it).
    """

    enabled: bool = False
    protocol: Literal["http/protobuf", "grpc"] | None = None
    endpoint: str | None = None
    service_name: str | None = None
    call_span_ratio: Ratio = 0.0


class SimulatorSection(_Section, frozen=True):
    """``[simulator]``: the built-in fake upstream.

    ``mode``: ``auto`` starts it and routes every provider to it when no provider has its API
    key set; ``on`` always does; ``off`` never does.  ``latency`` is its base response time.
    """

    mode: SimulatorMode = "auto"
    host: NonEmpty = "127.0.0.1"
    port: Port = 0
    latency: Annotated[float, msgspec.Meta(ge=0)] = 0.02


class ClusterSection(_Section, frozen=True):
    """``[cluster]``: cluster mode through Redis (see ``service.cluster``); off unless
    ``redis_url`` is set.  ``namespace`` scopes the keys: replicas that share it share breakers
    by name.  ``cluster_counting`` makes the rate policies use every replica's calls."""

    redis_url: NonEmpty | None = None
    namespace: NonEmpty = "breakerd"
    cluster_counting: bool = False


class HealthSection(_Section, frozen=True):
    """``[health]``: what the probes answer (see ``service.probes``).

    ``fail_on``: when ``GET /health`` answers 503: ``never`` (only when the service itself is
    broken), ``route_unservable`` (some route has no provider that can take a call now) or
    ``any_open`` (some breaker is open).  ``require_primaries``: ``GET /readyz`` is ready only
    when every route's own provider (not a fallback) can take a call.
    """

    fail_on: Literal["never", "route_unservable", "any_open"] = "route_unservable"
    require_primaries: bool = False


class LoggingSection(_Section, frozen=True):
    """``[logging]``: the service's log (see ``service.logs``); ``--log-level`` and
    ``--log-format`` win over these.  ``access_log`` logs one line per gateway request;
    ``probe_access_log`` adds the health, readiness and metrics scrapes."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    access_log: bool = True
    probe_access_log: bool = False


class GatewaySection(_Section, frozen=True):
    """``[gateway]``: client keys for ``/v1/*`` (see ``service.gateway_auth``); off when
    neither is set.  ``api_keys_env`` names a variable with comma-separated keys;
    ``api_keys_file`` a file with one sha256 hex digest of a key per line (``#`` comments)."""

    api_keys_env: str | None = None
    api_keys_file: str | None = None


class MetricsSection(_Section, frozen=True):
    """``[metrics]``: ``GET /metrics`` in the Prometheus text format (OpenMetrics on
    ``Accept``), through the same OpenTelemetry pipeline as OTLP (needs ``breakerd[otel]``)."""

    prometheus: bool = True


class ServiceConfig(_Section, frozen=True):
    """The whole file, validated, with cross-references checked.

    ``breakers`` always holds a ``default`` entry; :meth:`breaker_config` gives the merged,
    validated settings of any entry.
    """

    service: ServiceSection = ServiceSection()
    breakers: dict[str, BreakerSection] = {}
    providers: dict[str, ProviderSection] = {}
    routes: dict[str, RouteSection] = {}
    telemetry: TelemetrySection = TelemetrySection()
    simulator: SimulatorSection = SimulatorSection()
    cluster: ClusterSection = ClusterSection()
    health: HealthSection = HealthSection()
    logging: LoggingSection = LoggingSection()
    gateway: GatewaySection = GatewaySection()
    metrics: MetricsSection = MetricsSection()
    source: str = "<defaults>"

    def breaker_settings(self, name: str) -> dict[str, Any]:
        """The numeric settings of breaker table ``name`` merged over ``default``."""
        merged = self.breakers.get(DEFAULT_BREAKER, BreakerSection()).settings()
        if name != DEFAULT_BREAKER:
            merged.update(self.breakers[name].settings())
        return merged

    def breaker_config(self, name: str, **exceptions: Any) -> CircuitBreakerConfig:
        """A ``CircuitBreakerConfig`` for breaker table ``name``; ``exceptions`` may set
        ``expected_exceptions`` / ``ignore_exceptions`` (the caller's failure policy)."""
        return CircuitBreakerConfig(**self.breaker_settings(name), **exceptions)

    def provider_breaker(self, provider: str) -> str:
        """The ``[breakers.*]`` table that provider ``provider`` uses."""
        section = self.providers[provider]
        if section.breaker is not None:
            return section.breaker
        return provider if provider in self.breakers else DEFAULT_BREAKER


class ConfigError(Exception):
    """The configuration is invalid.  ``field`` is the dotted path of the bad value (empty
    for file-level problems), ``reason`` says what is wrong, ``source`` is the file."""

    def __init__(self, field: str, reason: str, source: str = "") -> None:
        super().__init__(field, reason, source)
        self.field = field
        self.reason = reason
        self.source = source

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


def with_service_overrides(config: ServiceConfig, **fields: Any) -> ServiceConfig:
    """``config`` with ``[service]`` fields replaced (from the command line: ``--port`` ...),
    validated like the file; None values are left out.  Raises :class:`ConfigError`."""
    given = {name: value for name, value in fields.items() if value is not None}
    raw = msgspec.structs.asdict(config.service) | given
    origins = {f"service.{name}": f"--{name.replace('_', '-')}" for name in given}
    try:
        service = _convert(raw, ServiceSection, "service", origins)
    except ConfigError as exc:
        exc.source = config.source
        raise
    return msgspec.structs.replace(config, service=service)


# -- environment overrides ---------------------------------------------------------------------

ENV_OVERRIDES: dict[str, tuple[tuple[str, str], type]] = {
    "BREAKERD_HOST": (("service", "host"), str),
    "BREAKERD_PORT": (("service", "port"), int),
    "BREAKERD_MAX_BODY_BYTES": (("service", "max_body_bytes"), int),
    "BREAKERD_SHUTDOWN_GRACE": (("service", "shutdown_grace"), float),
    "BREAKERD_TELEMETRY": (("telemetry", "enabled"), bool),
    "BREAKERD_SIMULATOR": (("simulator", "mode"), str),
}
"""Environment variable -> (section, key) it overrides, and the type its text is parsed as."""


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write the set overrides into ``raw``; return dotted path -> variable, for messages."""
    origins: dict[str, str] = {}
    for variable, ((section, key), kind) in ENV_OVERRIDES.items():
        text = environ.get(variable)
        if text is None or text == "":
            continue
        try:
            value: Any = msgspec.convert(text.strip(), kind, strict=False)
        except msgspec.ValidationError:
            raise ConfigError(
                variable, f"expected {kind.__name__}, got {json.dumps(text)}"
            ) from None
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(section, f"expected a table, got {_show(table)}")
        table[key] = value
        origins[f"{section}.{key}"] = variable
    return origins


# -- loading -----------------------------------------------------------------------------------


def default_config_text() -> str:
    """The bundled ``service/defaults.toml``."""
    return resources.files("service").joinpath("defaults.toml").read_text(encoding="utf-8")


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Read, override and validate the configuration.

    ``path`` None means the bundled defaults.  ``environ`` defaults to ``os.environ``.
    Raises :class:`ConfigError` for an unreadable file, invalid TOML or any invalid value.
    """
    if path is None:
        source, text = "<bundled defaults.toml>", default_config_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"cannot read the config file: {exc}", source) from None
    return parse_config(text, source=source, environ=environ)


def parse_config(
    text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Like :func:`load_config`, from TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML: {exc}", source) from None
    try:
        origins = _apply_env(raw, os.environ if environ is None else environ)
        return _decode(raw, origins, source)
    except ConfigError as exc:
        exc.source = source
        raise


_TABLES: dict[str, type[msgspec.Struct]] = {
    "service": ServiceSection,
    "telemetry": TelemetrySection,
    "simulator": SimulatorSection,
    "cluster": ClusterSection,
    "health": HealthSection,
    "logging": LoggingSection,
    "gateway": GatewaySection,
    "metrics": MetricsSection,
}
_NAMED_TABLES: dict[str, type[msgspec.Struct]] = {
    "breakers": BreakerSection,
    "providers": ProviderSection,
    "routes": RouteSection,
}


def _decode(raw: dict[str, Any], origins: dict[str, str], source: str) -> ServiceConfig:
    for key in raw:
        if key not in _TABLES and key not in _NAMED_TABLES:
            raise ConfigError(_key(key), _unknown(key, [*_TABLES, *_NAMED_TABLES], "table"))
    sections: dict[str, Any] = {}
    for key, struct in _TABLES.items():
        if key in raw:
            sections[key] = _convert(raw[key], struct, key, origins)
    for key, struct in _NAMED_TABLES.items():
        table = raw.get(key, {})
        if not isinstance(table, dict):
            raise ConfigError(key, f"expected a table, got {_show(table)}")
        sections[key] = {
            name: _convert(entry, struct, f"{key}.{_key(name)}", origins)
            for name, entry in table.items()
        }
    sections["breakers"].setdefault(DEFAULT_BREAKER, BreakerSection())
    config = ServiceConfig(**sections, source=source)
    _check(config)
    return config


def _convert(value: Any, struct: type[S], path: str, origins: dict[str, str]) -> S:
    """``msgspec.convert`` with errors rewritten as ``path.field: reason, got value``."""
    try:
        return msgspec.convert(value, struct)
    except msgspec.ValidationError as exc:
        raise _rewrite(str(exc), value, struct, path, origins) from None


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.DOTALL)
_FIELD_FIRST = re.compile(r"^(?P<field>[A-Za-z_][\w\[\].]*): (?P<reason>.*)$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")
_BAD_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$")


def _rewrite(
    text: str, raw: Any, struct: type[msgspec.Struct], path: str, origins: dict[str, str]
) -> ConfigError:
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    message, where = match["message"], match["where"] or ""
    field = path + where
    if unknown := _UNKNOWN.match(message):
        name = unknown["name"]
        return ConfigError(f"{field}.{_key(name)}", _unknown(name, struct.__struct_fields__))
    if missing := _MISSING.match(message):
        return ConfigError(f"{field}.{missing['name']}", "required field is missing")
    if field_first := _FIELD_FIRST.match(message):  # from a __post_init__: "name: reason"
        field, message = f"{field}.{field_first['field']}", field_first["reason"]
    elif _BAD_ENUM.match(message) and where[1:] in struct.__struct_fields__:
        choices = _literal_choices(typing.get_type_hints(struct)[where[1:]])
        found, value = _lookup(raw, where)
        message = f"expected one of {', '.join(json.dumps(c) for c in choices)}"
        if found:
            message += f", got {_show(value)}"
    else:
        message = message.replace("`", "")
        message = message[:1].lower() + message[1:]
        if ", got " not in message:
            found, value = _lookup(raw, where)
            if found:
                message += f", got {_show(value)}"
    if field in origins:
        message += f" (from {origins[field]})"
    return ConfigError(field, message)


def _literal_choices(hint: Any) -> list[Any]:
    """The values a ``Literal[...]`` hint allows, also inside ``Literal[...] | None``."""
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    return [choice for arg in typing.get_args(hint) for choice in _literal_choices(arg)]


_SEGMENT = re.compile(r"\.(\w+)|\[(\d+)\]")


def _lookup(raw: Any, where: str) -> tuple[bool, Any]:
    """The raw value at msgspec path suffix ``where`` (``.a.b[0]``), if it can be found."""
    value = raw
    for name, index in _SEGMENT.findall(where):
        if name and isinstance(value, dict) and name in value:
            value = value[name]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return False, None
    return True, value


def _check(config: ServiceConfig) -> None:
    """Rules across fields and tables: finite numbers, breaker values, URLs, and every name
    that refers to another."""
    _check_finite(config, "")
    # `default` first: a bad value there would otherwise be reported on the table inheriting it.
    for name in sorted(config.breakers, key=lambda name: name != DEFAULT_BREAKER):
        try:
            config.breaker_config(name)
        except ConfigurationError as exc:  # "field: reason", from CircuitBreakerConfig
            field, _, reason = str(exc).partition(": ")
            raise ConfigError(f"breakers.{_key(name)}.{field}", reason) from None
    for name, provider in config.providers.items():
        if provider.breaker is not None and provider.breaker not in config.breakers:
            raise ConfigError(
                f"providers.{_key(name)}.breaker",
                _unknown(provider.breaker, list(config.breakers), "breaker table"),
            )
        if provider.base_url is not None and (problem := url_problem(provider.base_url)):
            raise ConfigError(f"providers.{_key(name)}.base_url", problem)
    # A table no provider uses is almost always a misspelt provider name, silently ignored.
    used = {DEFAULT_BREAKER} | {config.provider_breaker(name) for name in config.providers}
    for name in config.breakers:
        if name not in used:
            raise ConfigError(
                f"breakers.{_key(name)}",
                "no provider uses this table: name it like a provider, or set that provider's "
                f"breaker = {json.dumps(name)}" + _known_providers(config),
            )
    for name, route in config.routes.items():
        where = f"routes.{_key(name)}"
        if route.provider not in config.providers:
            raise ConfigError(
                f"{where}.provider", _unknown(route.provider, list(config.providers), "provider")
            )
        for index, fallback in enumerate(route.fallbacks):
            if fallback not in config.providers:
                raise ConfigError(
                    f"{where}.fallbacks[{index}]",
                    _unknown(fallback, list(config.providers), "provider"),
                )
            if fallback == route.provider or fallback in route.fallbacks[:index]:
                raise ConfigError(
                    f"{where}.fallbacks[{index}]", f"provider {fallback!r} is already in the route"
                )


def _check_finite(value: Any, path: str) -> None:
    """Every number in the config is finite: TOML allows ``inf`` and ``nan``, and either one
    in a duration breaks timers (``OverflowError``) or every request."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(path, f"expected a finite number, got {value}")
    elif isinstance(value, msgspec.Struct):
        for field in value.__struct_fields__:
            _check_finite(getattr(value, field), f"{path}.{field}" if path else field)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}.{_key(key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]")


def url_problem(url: str) -> str | None:
    """What is wrong with an upstream URL, or None.  The message never repeats the URL: it may
    carry a password."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"expected an http:// or https:// URL, got scheme {json.dumps(parts.scheme)}"
    if parts.username is not None or parts.password is not None:
        return (
            "must not carry credentials (user:pass@): put the key in the variable named by "
            "api_key_env"
        )
    if not parts.hostname:
        return "the URL has no host"
    return None


def _known_providers(config: ServiceConfig) -> str:
    names = sorted(config.providers)
    return f" (providers: {', '.join(names)})" if names else " (there are no providers)"


def config_warnings(config: ServiceConfig) -> list[str]:
    """What is valid but probably not meant; the service logs each line at WARNING at start.

    A config with no routes is allowed (the admin API and breakers work without the
    gateway), but every ``POST /v1/chat/completions`` then answers 404.
    """
    warnings = []
    if not config.routes:
        names = sorted(config.providers)
        warnings.append(
            "the configuration has no [routes]: every gateway request will answer 404 "
            f"(providers defined: {', '.join(names) or 'none'})"
        )
    return warnings


#: Characters a secret may hold: visible ASCII, no spaces or control characters.
_SECRET = re.compile(r"^[\x21-\x7e]+$")


def clean_secrets(
    config: ServiceConfig,
    environ: Mapping[str, str],
    *,
    admin_token_env: str,
    default_key_env: Mapping[str, str],
) -> dict[str, str]:
    """``environ`` with the API keys of every provider and the admin token checked.
    ``default_key_env`` maps a provider kind to the variable read when ``api_key_env`` is
    empty.

    Surrounding whitespace (the trailing newline of a key read from a file) is stripped; what
    is left must be visible ASCII without spaces, and the admin token must be at least
    :data:`MIN_ADMIN_TOKEN` characters long.  Raises :class:`ConfigError` naming the
    variable, never showing its value.  An unset or blank variable stays unset.
    """
    cleaned = dict(environ)
    variables = {admin_token_env: admin_token_env}
    for name, provider in config.providers.items():
        variable = provider.api_key_env or default_key_env.get(provider.kind, "")
        if variable:
            variables.setdefault(variable, f"providers.{_key(name)}.api_key_env")
    for variable, field in variables.items():
        value = environ.get(variable, "").strip()
        if not value:
            cleaned.pop(variable, None)
            continue
        where = field if field == variable else f"{field} ({variable})"
        if not _SECRET.match(value):
            raise ConfigError(
                where,
                "the value holds a space, a control character or a non-ASCII character; "
                "it cannot be sent in an HTTP header",
            )
        if variable == admin_token_env and len(value) < MIN_ADMIN_TOKEN:
            raise ConfigError(
                where, f"the admin token must be at least {MIN_ADMIN_TOKEN} characters long"
            )
        cleaned[variable] = value
    return cleaned


#: The shortest admin token accepted: a guessable token is no protection.
MIN_ADMIN_TOKEN = 16


def _unknown(name: str, known: typing.Iterable[str], what: str = "field") -> str:
    known = sorted(known)
    text = f"unknown {what} {json.dumps(name)}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        text += f" (did you mean {json.dumps(close[0])}?)"
    elif known:
        text += f" (known: {', '.join(known)})"
    return text


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    """``name`` as it would be written in a TOML dotted key."""
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _show(value: Any) -> str:
    """A value as the user wrote it, roughly: JSON where that works."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
