"""The dashboard's routes over plain HTTP: headers, the redirect, the assets, policies.json."""

from __future__ import annotations

import aiohttp
import pytest

from service.circuit_breaker import remove_circuit_breaker
from service.config import parse_config
from service.dashboard import CONTENT_SECURITY_POLICY
from tests.service.http.conftest import TOKEN, config_text, serving

pytestmark = pytest.mark.anyio

TYPES = {
    "/dashboard": "text/html",
    "/dashboard/app.css": "text/css",
    "/dashboard/app.js": "text/javascript",
    "/dashboard/icon.svg": "image/svg+xml",
}


@pytest.mark.parametrize("token", [TOKEN, None])
async def test_assets_policies_and_the_redirect(token: str | None) -> None:
    tag = f"routes{'t' if token else 'n'}x"
    config = parse_config(config_text(tag), environ={})
    environ = {"BREAKERD_ADMIN_TOKEN": token} if token else {}
    try:
        async with serving(config, environ) as service, aiohttp.ClientSession() as http:
            async with http.get(service.url + "/", allow_redirects=False) as response:
                assert (response.status, response.headers["Location"]) == (303, "/dashboard")
            for path, kind in TYPES.items():
                async with http.get(service.url + path) as response:
                    assert response.status == 200
                    assert response.content_type == kind
                    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                    assert response.headers["X-Content-Type-Options"] == "nosniff"
            # Only the shipped files: no directory listing, no way out of the folder.
            for path in ("/dashboard/", "/dashboard/__init__.py", "/dashboard/..%2F__init__.py"):
                async with http.get(service.url + path) as response:
                    assert response.status == 404
                    assert response.content_type == "application/json"
            async with http.get(service.url + "/dashboard/policies.json") as response:
                body = await response.json()
            assert body["admin_enabled"] is (token is not None)
            assert body["breakers"][f"{tag}a_client"] == {
                "failure_threshold": 2,
                "success_threshold": 1,
                "failure_rate_threshold": None,
                "half_open_max_calls": 1,
                "timeout_duration": 30.0,
            }
            assert TOKEN not in await response.text()
    finally:
        for provider in config.providers:
            remove_circuit_breaker(f"{provider}_client")
