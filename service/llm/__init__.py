"""The LLM client package; ``service.llm_client`` re-exports its public API.

Modules: ``errors`` (error classes and the fault mapping), ``schema`` (requests and answers),
``settings`` (providers, options, environment), ``wire`` (the two wire formats and SSE),
``provider`` (one HTTP exchange), ``sessions`` (one HTTP session per loop), ``facade`` (the sync
facade's loop thread), ``stream`` (streamed answers), ``client`` (breakers and the chain).
"""

from actors.extras import missing_extra

try:
    import aiohttp  # noqa: F401  (present only with the extra)
except ImportError as exc:
    raise missing_extra("aiohttp", "service", "breakerd's LLM client") from exc
