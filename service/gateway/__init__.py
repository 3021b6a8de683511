"""The LLM gateway: OpenAI-compatible ``/v1/chat/completions``, ``/v1/models``,
``/v1/embeddings``, and Anthropic-compatible ``/v1/messages``, over breakers, cooldowns and
fallback chains.

Modules, by what each owns: ``providers`` (the configured upstreams and the simulator),
``app`` (the :class:`Gateway`: routes and endpoints), ``core`` (raw bodies, forwarding,
aliasing, what the access log learns), ``relay`` (SSE passed through, coalesced), and one
module per endpoint: ``chat``, ``models``, ``embeddings``, ``messages``.
"""

from __future__ import annotations

from service.gateway.app import Gateway
from service.gateway.core import PROVIDER_HEADER, Route
from service.gateway.providers import ProviderTarget, resolve_providers

__all__ = ["PROVIDER_HEADER", "Gateway", "ProviderTarget", "Route", "resolve_providers"]
