"""Optional dependencies: a clear ``ImportError`` naming the extra to install.

breakerd's core (``actors``, ``service.circuit_breaker``) needs only anyio and msgspec; the
HTTP service, OpenTelemetry and cluster mode live behind extras.  A module that needs one
imports it like this, so that a user who installed ``breakerd`` alone learns
``pip install 'breakerd[service]'`` instead of reading a bare ``No module named 'aiohttp'``::

    try:
        from aiohttp import web
    except ImportError as exc:
        raise missing_extra("aiohttp", "service", "breakerd's HTTP service") from exc

Standard library only: every package may use it.
"""

from __future__ import annotations


def missing_extra(module: str, extra: str, feature: str) -> ImportError:
    """The error to raise when ``module`` (provided by ``breakerd[extra]``) cannot be
    imported; ``feature`` names what needs it."""
    return ImportError(
        f"{feature} needs {module!r}, which is not installed: pip install 'breakerd[{extra}]'",
        name=module,
    )
