"""The LLM client package; ``service.llm_client`` re-exports its public API.

Modules: ``errors`` (error classes and the fault mapping), ``schema`` (requests and answers),
``settings`` (providers, options, environment), ``wire`` (the two wire formats and SSE),
``translate`` (Chat Completions <-> Anthropic Messages, pure), ``transport`` (the HTTP/1.1
client), ``provider`` (one HTTP exchange and its connection slots), ``sessions`` (one transport
per loop), ``facade`` (the sync facade's loop thread), ``stream`` (streamed answers),
``cooldown`` (rate-limit cooldowns beside the breakers), ``chain`` (the fallback chain the
library and the gateway share), ``client`` (the library's entry point).
"""

from actors.extras import missing_extra

try:
    import httptools  # noqa: F401  (present only with the extra)
except ImportError as exc:
    raise missing_extra("httptools", "service", "breakerd's LLM client") from exc
