"""The dashboard: one static page, its stylesheet and script, served by the service itself.

Routes (added to the service's application by :func:`add_routes`)::

    GET /                         303 to /dashboard
    GET /dashboard                the page (index.html)
    GET /dashboard/{asset}        app.css, app.js, icon.svg
    GET /dashboard/policies.json  each breaker's thresholds and whether admin actions exist

The page has no build step and loads nothing from elsewhere (operators are often offline): the
assets ship in the package beside this module and are read once, at import.  Everything live
comes from the service's own read-only API: ``GET /events`` (SSE), ``GET /breakers``,
``/health``, ``/readyz``, and ``policies.json`` above, which holds what the metrics snapshots
leave out (the thresholds that the counters are compared with).  Admin actions are the
ordinary admin endpoints, called with the bearer token the operator typed in.

Every asset goes out with a strict Content-Security-Policy: scripts and styles from this origin
only (no inline script, no inline event handler, no ``eval``), connections to this origin only,
no frames, no forms, no plugins.  Breaker names are data, so the script sets them with
``textContent`` and never builds HTML from them.

Alternatives considered: serving the files with ``add_static`` would expose a directory and
re-read files per request; embedding the page in a Python string would hide it from editors
and linters.  A separate JSON API for the page was avoided: ``policies.json`` is the one thing
the existing endpoints do not say.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from actors.system import default_system

#: The page's policy: same-origin scripts, styles, images and connections; nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_TYPES = {
    "index.html": "text/html",
    "app.css": "text/css",
    "app.js": "text/javascript",
    "icon.svg": "image/svg+xml",
}


def _load() -> dict[str, bytes]:
    folder = resources.files(__name__) / "static"
    return {name: (folder / name).read_bytes() for name in _TYPES}


_ASSETS = _load()


def _asset(name: str) -> web.Response:
    return web.Response(
        body=_ASSETS[name], content_type=_TYPES[name], charset="utf-8", headers=_HEADERS
    )


async def _page(request: web.Request) -> web.Response:
    return _asset("index.html")


async def _static(request: web.Request) -> web.Response:
    # The route only matches the names in _TYPES.
    return _asset(request.match_info["asset"])


async def _root(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/dashboard")


def policies(admin_enabled: bool) -> dict[str, Any]:
    """What the page compares the live counters with, per breaker, and whether the admin
    endpoints are enabled (so that the page can say how to enable them when they are not)."""
    breakers = default_system().breakers()
    return {
        "admin_enabled": admin_enabled,
        "breakers": {
            name: {
                "failure_threshold": config.failure_threshold,
                "success_threshold": config.success_threshold,
                "failure_rate_threshold": config.failure_rate_threshold,
                "half_open_max_calls": config.half_open_max_calls,
                "timeout_duration": config.timeout_duration,
            }
            for name, breaker in sorted(breakers.items())
            for config in (breaker.config,)
        },
    }


def add_routes(app: web.Application, *, admin_enabled: bool) -> None:
    """Add the page, its assets and ``policies.json`` to ``app`` (see the module docstring)."""

    async def _policies(request: web.Request) -> web.Response:
        return web.Response(
            body=msgspec.json.encode(policies(admin_enabled)),
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    router = app.router
    router.add_get("/", _root)
    router.add_get("/dashboard", _page)
    router.add_get("/dashboard/policies.json", _policies)
    router.add_get(
        "/dashboard/{asset:" + "|".join(n.replace(".", r"\.") for n in _TYPES) + "}", _static
    )
