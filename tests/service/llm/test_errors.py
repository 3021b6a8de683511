"""The fault map and the error classes, as plain functions (no server, no loop)."""

from __future__ import annotations

import math
import ssl

import pytest

from actors import CircuitState
from actors.errors import CircuitBreakerOpenError
from service.circuit_breaker import CircuitBreakerOpenError as PublicOpenError
from service.llm.errors import (
    APIError,
    AuthenticationError,
    CircuitOpenAPIError,
    InvalidRequestError,
    MalformedResponseError,
    NetworkTimeoutError,
    ProviderConfigurationError,
    RateLimitError,
    ServiceUnavailableError,
    class_for_status,
    error_for_status,
    error_for_transport,
    error_for_type,
    message_from_body,
    redact,
    retry_after_from_headers,
)
from service.llm.transport import AnswerCutError, InvalidURLError, ProtocolError

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, InvalidRequestError),
        (408, NetworkTimeoutError),
        (413, InvalidRequestError),
        (418, InvalidRequestError),
        (422, InvalidRequestError),
        (429, RateLimitError),
        (500, ServiceUnavailableError),
        (502, ServiceUnavailableError),
        (503, ServiceUnavailableError),
        (504, ServiceUnavailableError),
        (507, ServiceUnavailableError),
        (529, ServiceUnavailableError),
        (301, APIError),
        (101, APIError),
    ],
)
def test_class_for_status(status: int, expected: type[APIError]) -> None:
    assert class_for_status(status) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0),  # already past
        ({"retry-after-ms": "250", "retry-after": "12"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
        ({"x-ratelimit-reset-tokens": "3 days"}, None),
        # Two limits: the exhausted one decides; without that hint, the later reset.
        (
            {
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-tokens": "40s",
                "x-ratelimit-remaining-tokens": "900",
            },
            2.0,
        ),
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "40s"}, 40.0),
        ({"anthropic-ratelimit-requests-reset": "2023-11-14T22:14:20Z"}, 60.0),
        ({"anthropic-ratelimit-tokens-reset": "2023-11-14T22:14:20"}, None),  # no time zone
        ({}, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], expected: float | None) -> None:
    result = retry_after_from_headers(headers, NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_error_for_status_keeps_the_providers_message_and_redacts_the_key() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: sk-secret", "type": "x"}}'
    error = error_for_status("openai", 401, {}, body, secret="sk-secret", now=NOW)
    assert type(error) is AuthenticationError
    assert (error.provider, error.status) == ("openai", 401)
    assert error.message == "Incorrect API key provided: [REDACTED]"
    assert str(error) == "openai: Incorrect API key provided: [REDACTED] (HTTP 401)"


def test_a_rate_limit_carries_retry_after() -> None:
    error = error_for_status("anthropic", 429, {"retry-after": "3"}, b"", secret=None, now=NOW)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 3.0
    assert "retry_after=3.0" in repr(error)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "model not found"}}', "model not found"),
        (b'{"type": "error", "error": {"type": "x", "message": "overloaded"}}', "overloaded"),
        (b'{"error": "plain string"}', "plain string"),
        (b"<html>\n<body>Bad   gateway</body></html>", "<html> <body>Bad gateway</body></html>"),
        (b"", "HTTP 502 with an empty body"),
        (b"x" * 2000, "x" * 500),
    ],
)
def test_message_from_body(body: bytes, message: str) -> None:
    assert message_from_body(body, 502) == message


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", ServiceUnavailableError),
        ("api_error", ServiceUnavailableError),
        ("rate_limit_error", RateLimitError),
        ("invalid_request_error", InvalidRequestError),
        ("authentication_error", AuthenticationError),
        ("permission_error", AuthenticationError),
        ("server_error", ServiceUnavailableError),
        ("something_new", APIError),
        (None, APIError),
    ],
)
def test_error_for_type(error_type: str | None, expected: type[APIError]) -> None:
    error = error_for_type("anthropic", error_type, "with sk-key inside", secret="sk-key")
    assert type(error) is expected
    assert error.status is None and "[REDACTED]" in error.message


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), NetworkTimeoutError),
        (ConnectionError("closed before the answer"), NetworkTimeoutError),
        (ConnectionResetError(104, "reset"), NetworkTimeoutError),
        (ssl.SSLCertVerificationError("self-signed"), NetworkTimeoutError),
        (AnswerCutError("cut"), NetworkTimeoutError),
        (InvalidURLError("nope"), ProviderConfigurationError),
        (ProtocolError("not HTTP"), MalformedResponseError),
        (ValueError("header 'x': a line break"), APIError),
    ],
)
def test_error_for_transport(exc: BaseException, expected: type[APIError]) -> None:
    error = error_for_transport("openai", exc)
    assert type(error) is expected
    assert type(exc).__name__ in error.message


def test_an_open_breaker_is_both_an_api_error_and_a_breaker_error() -> None:
    error = CircuitOpenAPIError(
        provider="openai", breaker_name="openai_client", state=CircuitState.OPEN, retry_after=4.0
    )
    assert isinstance(error, APIError)
    assert isinstance(error, CircuitBreakerOpenError) and PublicOpenError is CircuitBreakerOpenError
    assert (error.provider, error.status, error.breaker_name) == ("openai", None, "openai_client")
    assert str(error) == (
        "openai: circuit breaker 'openai_client' is open; call not attempted (retry after 4.000s)"
    )
    for catch in (APIError, CircuitBreakerOpenError):
        with pytest.raises(catch):
            raise error


def test_from_rejection_copies_the_breakers_data() -> None:
    rejection = CircuitBreakerOpenError("x_client", CircuitState.HALF_OPEN, math.inf)
    error = CircuitOpenAPIError.from_rejection("x", rejection)
    assert (error.breaker_name, error.state, error.retry_after) == (
        "x_client",
        CircuitState.HALF_OPEN,
        math.inf,
    )


def test_redact() -> None:
    assert redact("key=abc and abc", "abc") == "key=[REDACTED] and [REDACTED]"
    assert redact("nothing here", "abc") == "nothing here"
    assert redact("empty secret", "") == "empty secret"
    assert redact("no secret", None) == "no secret"
