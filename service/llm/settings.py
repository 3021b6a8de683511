"""Which providers exist, and how one provider's settings come from options and environment.

Settings are read once, when the client is made (so each ``get_llm_client`` call sees the
environment of that moment); what is missing is remembered and raised at the first call, naming
the option and the variable that would fix it.  As in the providers' own SDKs,
``OPENAI_BASE_URL`` includes the version path and ``ANTHROPIC_BASE_URL`` does not.

``openai_compatible`` never reads ``OPENAI_API_KEY``: sending an OpenAI key to some other
server would leak it.  Its key (optional: local servers need none) and base URL come from
options or ``OPENAI_COMPATIBLE_API_KEY`` / ``OPENAI_COMPATIBLE_BASE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import yarl

from actors.errors import ConfigurationError
from service.llm.errors import ProviderConfigurationError
from service.llm.wire import WireFormat
from service.llm.wire.anthropic import AnthropicMessages
from service.llm.wire.openai import ChatCompletions


class Secret:
    """An API key that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself: for the request header, and for redacting provider messages."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class ProviderKind(msgspec.Struct, frozen=True, kw_only=True):
    """A provider type: its wire format and where its settings come from by default."""

    wire: WireFormat
    key_env: str
    base_url_env: str
    default_base_url: str | None
    default_model: str | None
    key_required: bool


KINDS: dict[str, ProviderKind] = {
    "openai": ProviderKind(
        wire=ChatCompletions(include_usage=True),
        key_env="OPENAI_API_KEY",
        base_url_env="OPENAI_BASE_URL",
        default_base_url="https://api.openai.com/v1",
        default_model="gpt-4o-mini",
        key_required=True,
    ),
    "anthropic": ProviderKind(
        wire=AnthropicMessages(),
        key_env="ANTHROPIC_API_KEY",
        base_url_env="ANTHROPIC_BASE_URL",
        default_base_url="https://api.anthropic.com",
        default_model="claude-3-5-haiku-latest",
        key_required=True,
    ),
    "openai_compatible": ProviderKind(
        wire=ChatCompletions(include_usage=False),
        key_env="OPENAI_COMPATIBLE_API_KEY",
        base_url_env="OPENAI_COMPATIBLE_BASE_URL",
        default_base_url=None,
        default_model=None,
        key_required=False,
    ),
}

Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]

#: Connections per provider (per client and loop), and how long a call waits for one.
DEFAULT_POOL_SIZE = 256
DEFAULT_POOL_TIMEOUT = 10.0


class ProviderOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One provider's options, as given to ``get_llm_client`` or in ``fallback_providers``.

    - ``provider``: ``"openai"``, ``"anthropic"`` or ``"openai_compatible"``.
    - ``name``: the label in breaker names (``<name>_client``), responses and errors; defaults
      to ``provider`` (give two ``openai_compatible`` servers different names).
    - ``api_key`` / ``api_key_env``: the key, or the variable to read it from.
    - ``base_url``, ``model``: override the environment and the defaults.
    - ``timeout``: seconds for a whole answer (for a stream: between two reads);
      ``connect_timeout``: seconds to connect.
    - ``max_tokens``: sent when the format requires a limit and the call gives none (Anthropic).
    - ``pool_size``: connections to this provider at once, per client and event loop (default
      ``get_llm_client(max_connections=...)``, else 256: LLM answers take seconds, and streams
      hold a connection for their whole length);
      ``pool_timeout``: seconds a call may wait for one of them before it fails with
      ``ProviderSaturatedError`` (the provider's ``timeout`` starts once a connection is held).
    """

    provider: Literal["openai", "anthropic", "openai_compatible"]
    name: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    api_key: str | None = None
    api_key_env: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    base_url: str | None = None
    model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    timeout: Seconds = 60.0
    connect_timeout: Seconds = 10.0
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    pool_timeout: Seconds = DEFAULT_POOL_TIMEOUT

    def __repr__(self) -> str:  # the default repr would show api_key
        return f"ProviderOptions(provider={self.provider!r}, name={self.name!r}, ...)"

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, where: str) -> ProviderOptions:
        """Validate ``options``; raises ``ConfigurationError`` (a ``ValueError``) naming
        ``where`` and the bad field (never its value, which might be a key)."""
        try:
            return msgspec.convert(dict(options), cls)
        except msgspec.ValidationError as exc:
            message = str(exc).replace("`$.", "`").replace("`$`", "the options")
            raise ConfigurationError(f"{where}: {message}") from None


class ProviderSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One provider, resolved: what the client needs to call it.

    ``problem`` says why it cannot be called (missing key or base URL), raised at first use.
    """

    name: str
    kind: str
    wire: WireFormat
    api_key: Secret | None
    base_url: str | None
    model: str | None
    timeout: float
    connect_timeout: float
    max_tokens: int
    pool_size: int
    pool_timeout: float
    problem: str | None

    @classmethod
    def resolve(
        cls,
        options: ProviderOptions,
        environ: Mapping[str, str] = os.environ,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> ProviderSettings:
        """``pool_size`` applies when the options set none."""
        kind = KINDS[options.provider]
        name = options.name or options.provider
        key_env = options.api_key_env or kind.key_env
        key = options.api_key if options.api_key is not None else environ.get(key_env)
        base_url = options.base_url or environ.get(kind.base_url_env) or kind.default_base_url
        problem = None
        if kind.key_required and not key:
            problem = (
                f"no API key for provider {name!r}: pass api_key=... or set {key_env} "
                "in the environment"
            )
        elif base_url is None:
            problem = (
                f"no base URL for provider {name!r}: pass base_url=... or set "
                f"{kind.base_url_env} in the environment"
            )
        else:
            problem = _url_problem(name, base_url)
        return cls(
            name=name,
            kind=options.provider,
            wire=kind.wire,
            api_key=Secret(key) if key else None,
            base_url=base_url,
            model=options.model or kind.default_model,
            timeout=options.timeout,
            connect_timeout=options.connect_timeout,
            max_tokens=options.max_tokens,
            pool_size=options.pool_size or pool_size,
            pool_timeout=options.pool_timeout,
            problem=problem,
        )

    def check(self) -> None:
        """Raise :class:`ProviderConfigurationError` when this provider cannot be called."""
        if self.problem is not None:
            raise ProviderConfigurationError(self.problem, provider=self.name)

    def model_for(self, model: str | None) -> str:
        """``model`` if given, else the configured one; raises when there is neither."""
        chosen = model or self.model
        if chosen is None:
            raise ProviderConfigurationError(
                f"no model for provider {self.name!r}: pass model=... to get_llm_client() "
                "or to the call",
                provider=self.name,
            )
        return chosen


def _url_problem(name: str, base_url: str) -> str | None:
    try:
        url = yarl.URL(base_url)
    except (TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        return f"invalid base URL for provider {name!r}: expected http(s)://host[:port][/path]"
    return None
