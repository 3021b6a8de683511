"""HTTP-client integrations: a breaker per upstream, created on demand.

- :mod:`service.integrations.aiohttp`: a client middleware (aiohttp >= 3.12,
  ``ClientSession(middlewares=...)``).
- :mod:`service.integrations.httpx`: transports for ``httpx.Client`` and ``httpx.AsyncClient``
  (the ``[httpx]`` extra).

Both apply the rules of :mod:`service.integrations.rules`; each imports its HTTP library only
when imported itself.
"""
