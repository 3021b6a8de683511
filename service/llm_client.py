"""LLM provider calls that degrade gracefully: per-provider circuit breakers, error classes,
fallback text and a fallback chain (the implementation lives in ``service.llm``).

    from service.llm_client import get_llm_client

    client = get_llm_client(provider="openai", fallback_providers=["anthropic"])
    response = await client.complete_async([{"role": "user", "content": "Hello"}])
"""

from __future__ import annotations

from service.llm.client import (
    DEFAULT_BREAKER_CONFIG,
    DEFAULT_FALLBACK_TEXT,
    LLMClient,
    get_llm_client,
    llm_breaker_config,
)
from service.llm.errors import (
    APIError,
    AuthenticationError,
    CircuitOpenAPIError,
    InvalidRequestError,
    MalformedResponseError,
    NetworkTimeoutError,
    ProviderConfigurationError,
    ProviderSaturatedError,
    RateLimitError,
    ServiceUnavailableError,
)
from service.llm.schema import FunctionCall, LLMResponse, ToolCall, ToolCallDelta, Usage
from service.llm.stream import LLMStream

__all__ = [
    "DEFAULT_BREAKER_CONFIG",
    "DEFAULT_FALLBACK_TEXT",
    "APIError",
    "AuthenticationError",
    "CircuitOpenAPIError",
    "FunctionCall",
    "InvalidRequestError",
    "LLMClient",
    "LLMResponse",
    "LLMStream",
    "MalformedResponseError",
    "NetworkTimeoutError",
    "ProviderConfigurationError",
    "ProviderSaturatedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "get_llm_client",
    "llm_breaker_config",
]
