"""Every error the LLM client raises, and the one place that maps provider faults onto them.

All of them are :class:`APIError` subclasses, so ``except APIError`` catches anything the client
raises about a provider (including an open breaker, through :class:`CircuitOpenAPIError`).
They carry data (provider, HTTP status, ``retry_after``) so that callers, the breaker policy and
the HTTP gateway act on them without parsing messages.  The provider's own error message is
kept; the API key never is: messages pass through :func:`redact` before they are stored.

Mapping, in one place (the wire modules and the client only call the functions below):

- :func:`error_for_status`: an HTTP error answer (status, headers, body) -> error class.
- :func:`error_for_type`: an error *inside* a 200 answer (an SSE ``error`` event, an OpenAI
  ``{"error": ...}`` chunk), keyed by the provider's error type.
- :func:`error_for_transport`: transport / socket / timeout exceptions -> error class.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from actors.errors import CircuitBreakerOpenError
from service.llm.transport import AnswerCutError, InvalidURLError, ProtocolError

__all__ = [
    "APIError",
    "AuthenticationError",
    "CircuitOpenAPIError",
    "ErrorDetail",
    "InvalidRequestError",
    "MalformedResponseError",
    "NetworkTimeoutError",
    "ProviderConfigurationError",
    "ProviderSaturatedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "error_for_status",
    "error_for_transport",
    "error_for_type",
    "redact",
    "retry_after_from_headers",
]


class APIError(Exception):
    """Base class: a provider call did not produce an answer.

    Raised as such (not as a subclass) for an HTTP status no rule below covers, such as an
    unexpected redirect, or an error type inside a stream that the client does not know.
    ``provider`` is the provider's name as configured (e.g. ``"openai"``), ``status`` the HTTP
    status when there was an HTTP answer (else None), ``message`` the provider's own message.
    ``upstream_body`` is the provider's error answer as it came (key redacted), for a gateway
    that passes a provider's 4xx on to its client unchanged; None without an HTTP answer.
    """

    upstream_body: bytes | None = None

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        # Exception.__init__ directly: CircuitOpenAPIError puts CircuitBreakerOpenError after
        # this class in its MRO, and that __init__ takes other arguments.
        Exception.__init__(self, message)
        self.message = message
        self.provider = provider
        self.status = status

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.provider}: {self.message}{status}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )


class RateLimitError(APIError):
    """HTTP 429, or a ``rate_limit_error`` inside a stream: the caller sends too much.

    ``retry_after`` is seconds to wait, from ``retry-after-ms`` / ``Retry-After`` or else the
    provider's reset headers (None when the provider gave no hint).  Ignored by the breaker: a
    quota is about the caller, not about the provider's health.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, retry_after={self.retry_after!r})"


class ServiceUnavailableError(APIError):
    """HTTP 5xx (500, 502, 503, 504, Anthropic's 529 "overloaded"), or an ``api_error`` /
    ``overloaded_error`` inside a stream: the provider is failing.  Counted by the breaker."""


class NetworkTimeoutError(APIError):
    """No complete answer arrived: connect or read timeout, connection refused or reset, a
    body cut short, or HTTP 408.  Counted by the breaker."""


class AuthenticationError(APIError):
    """HTTP 401 or 403: the key is wrong, revoked, or not allowed to do this.

    Ignored by the default breaker policy: the breaker is shared by every client of the provider
    in the process, so one client's bad key must not cut the others off, and a 401 is already
    fast (there is no load to shed).  It is raised at once, never hidden behind a fallback:
    a configuration mistake should be loud.
    """


class InvalidRequestError(APIError):
    """HTTP 400, 404, 413, 422 (and any other 4xx without a rule of its own), or messages the
    client refuses before sending (then ``status`` is None): the caller's own fault, ignored by
    the breaker so that one bad request never opens it for everyone."""


class MalformedResponseError(APIError):
    """The provider answered 2xx but the answer breaks its wire format: invalid JSON, a missing
    field, a stream that ended without its end marker.  Counted by the breaker."""


class ProviderSaturatedError(APIError):
    """Every connection slot of this provider stayed busy for ``pool_timeout`` seconds: the
    limit is ours (``pool_size``), the provider was not even asked.

    Never a breaker outcome (the slot is taken before the breaker admits the call), so local
    saturation cannot open a healthy provider's breaker.  A fallback chain moves on to the next
    provider; the gateway answers 503 with ``x-should-retry: true``.
    """


class ProviderConfigurationError(APIError):
    """The client cannot call this provider as configured: no API key, no base URL, no model.

    Raised at the first call, before any request is sent (or in place of one, for a base URL
    the transport cannot call); the message names the option and the environment variable that
    would fix it.  Ignored by the breaker, like the caller's other mistakes.
    """


class CircuitOpenAPIError(APIError, CircuitBreakerOpenError):
    """The provider's breaker rejected the call; nothing was sent.

    Both an :class:`APIError` (for code that catches provider errors) and a
    :class:`~actors.errors.CircuitBreakerOpenError` (``breaker_name``, ``state``,
    ``retry_after``: seconds until the breaker admits a probe, ``inf`` while forced open).
    Raised only with ``use_fallback=False``, when the last provider of the chain rejected.
    """

    def __init__(self, *, provider: str, breaker_name: str, state: Any, retry_after: float) -> None:
        CircuitBreakerOpenError.__init__(self, breaker_name, state, retry_after)
        self.provider = provider
        self.status = None
        self.message = CircuitBreakerOpenError.__str__(self)

    @classmethod
    def from_rejection(cls, provider: str, error: CircuitBreakerOpenError) -> CircuitOpenAPIError:
        return cls(
            provider=provider,
            breaker_name=error.breaker_name,
            state=error.state,
            retry_after=error.retry_after,
        )


# -- HTTP status -> class --------------------------------------------------------------------

_STATUS_CLASSES: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: InvalidRequestError,
    408: NetworkTimeoutError,
    413: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
    500: ServiceUnavailableError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
    529: ServiceUnavailableError,  # Anthropic: overloaded
}


def class_for_status(status: int) -> type[APIError]:
    """The error class for an HTTP error status (any 5xx is the provider's, any other 4xx the
    caller's; anything else, e.g. a redirect, is a plain :class:`APIError`)."""
    known = _STATUS_CLASSES.get(status)
    if known is not None:
        return known
    if 500 <= status <= 599:
        return ServiceUnavailableError
    if 400 <= status <= 499:
        return InvalidRequestError
    return APIError


def error_for_status(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    now: float,
) -> APIError:
    """The error for an HTTP error answer.  ``now`` is the wall clock (epoch seconds), used to
    turn reset timestamps into ``retry_after``; ``secret`` is redacted from the message."""
    message = redact(message_from_body(body, status), secret)
    cls = class_for_status(status)
    error: APIError
    if cls is RateLimitError:
        error = RateLimitError(
            message,
            provider=provider,
            status=status,
            retry_after=retry_after_from_headers(headers, now),
        )
    else:
        error = cls(message, provider=provider, status=status)
    error.upstream_body = redact_bytes(body, secret)
    return error


class ErrorDetail(msgspec.Struct):
    """The ``error`` object both wire formats use (``{"message", "type", ...}``)."""

    message: str = ""
    type: str | None = None


class _ErrorBody(msgspec.Struct):
    # OpenAI: {"error": {"message", "type", ...}}; Anthropic: {"type": "error", "error": {...}}
    error: ErrorDetail | str | None = None


def message_from_body(body: bytes, status: int | None = None) -> str:
    """The provider's error message from an error body, whatever its shape (JSON error object,
    HTML from a proxy, nothing): never empty, at most 500 characters."""
    try:
        error = msgspec.json.decode(body, type=_ErrorBody).error
    except msgspec.DecodeError:
        error = None
    if isinstance(error, ErrorDetail) and error.message:
        text = error.message
    elif isinstance(error, str) and error:
        text = error
    else:
        text = " ".join(body.decode("utf-8", "replace").split())
    if not text:
        text = f"HTTP {status} with an empty body" if status is not None else "no message"
    return text[:500]


# -- error types inside a 200 answer ---------------------------------------------------------

_TYPE_CLASSES: dict[str, type[APIError]] = {
    # Anthropic (https://docs.anthropic.com/en/api/errors)
    "invalid_request_error": InvalidRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": AuthenticationError,
    "not_found_error": InvalidRequestError,
    "request_too_large": InvalidRequestError,
    "rate_limit_error": RateLimitError,
    "api_error": ServiceUnavailableError,
    "overloaded_error": ServiceUnavailableError,
    # OpenAI-style servers
    "server_error": ServiceUnavailableError,
    "insufficient_quota": RateLimitError,
}


def error_for_type(
    provider: str, error_type: str | None, message: str, *, secret: str | None
) -> APIError:
    """The error for an error reported inside a 2xx answer, by the provider's error type (an
    unknown type is a plain :class:`APIError`, which the breaker counts)."""
    cls = _TYPE_CLASSES.get(error_type or "", APIError)
    text = redact(message or f"stream error {error_type!r}", secret)
    return cls(text, provider=provider)


# -- transport faults ------------------------------------------------------------------------


def error_for_transport(
    provider: str, exc: BaseException, *, secret: str | None = None
) -> APIError:
    """The error for an exception raised by the HTTP transport (``service.llm.transport``) or
    the socket layer during a request.

    Timeouts, refused and reset connections and answers cut short are all
    :class:`NetworkTimeoutError`; a URL the transport cannot call is a configuration error; an
    answer that is not HTTP is a malformed answer.  Anything else (a ``ValueError`` for a
    header value that cannot be sent, a bug in a library below us) is a plain
    :class:`APIError`: counted, and a fallback is tried, never a bare 500.
    """
    detail = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secret)
    if isinstance(exc, TimeoutError):
        return NetworkTimeoutError(f"timed out ({detail})", provider=provider)
    if isinstance(exc, AnswerCutError):
        return NetworkTimeoutError(f"connection broke mid-answer ({detail})", provider=provider)
    if isinstance(exc, InvalidURLError):
        return ProviderConfigurationError(f"invalid base URL ({detail})", provider=provider)
    if isinstance(exc, OSError):  # ConnectionError, ssl.SSLError, socket.gaierror
        return NetworkTimeoutError(f"connection failed ({detail})", provider=provider)
    if isinstance(exc, ProtocolError):
        return MalformedResponseError(f"unusable answer ({detail})", provider=provider)
    return APIError(f"request failed ({detail})", provider=provider)


# -- Retry-After -------------------------------------------------------------------------------

#: The longest wait any Retry-After from a provider is taken to ask for (an upstream once sent
#: ``1e308``): longer hints are clamped to it, so that no number of ours ever grows absurd.
MAX_RETRY_AFTER = 86_400.0


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# Reset headers per limit, with the matching "remaining" header (a limit at 0 is the one hit).
_RESET_HEADERS = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    ("anthropic-ratelimit-requests-reset", "anthropic-ratelimit-requests-remaining"),
    ("anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining"),
    ("anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-input-tokens-remaining"),
    ("anthropic-ratelimit-output-tokens-reset", "anthropic-ratelimit-output-tokens-remaining"),
)


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait before retrying, from a rate-limited answer's headers, or None.

    In order: ``retry-after-ms``; ``Retry-After`` (seconds or an HTTP date); the providers'
    reset headers (OpenAI's durations such as ``6m0s``, Anthropic's RFC 3339 times), taking the
    limits whose ``remaining`` is 0 when the answer says which, and the latest of them.
    ``headers`` must look names up case-insensitively (the transport's do); ``now``: epoch seconds.
    The result is clamped to ``[0, MAX_RETRY_AFTER]``.
    """
    seconds = _retry_after(headers, now)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None and (seconds := _number(value)) is not None:
        return seconds / 1000.0
    value = headers.get("retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is None:
            seconds = _http_date_delay(value, now)
        if seconds is not None:
            return seconds
    resets: list[tuple[bool, float]] = []
    for reset_name, remaining_name in _RESET_HEADERS:
        value = headers.get(reset_name)
        if value is None:
            continue
        seconds = _go_duration(value)
        if seconds is None:
            seconds = _timestamp_delay(value, now)
        if seconds is not None:
            resets.append((headers.get(remaining_name, "").strip() == "0", seconds))
    if not resets:
        return None
    exhausted = [seconds for hit, seconds in resets if hit]
    return max(exhausted or [seconds for _, seconds in resets])


def _number(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _http_date_delay(value: str, now: float) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def _go_duration(value: str) -> float | None:
    text = value.strip()
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def _timestamp_delay(value: str, now: float) -> float | None:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def redact_bytes(body: bytes, secret: str | None) -> bytes:
    """``body`` with every occurrence of ``secret`` replaced."""
    if secret:
        raw = secret.encode()
        if raw in body:
            return body.replace(raw, b"[REDACTED]")
    return body


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced (providers sometimes echo keys)."""
    if secret and secret in text:
        return text.replace(secret, "[REDACTED]")
    return text
