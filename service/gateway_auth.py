"""Client keys for the gateway (``/v1/*``): who may spend the service's provider keys.

Off unless ``[gateway] api_keys_env`` or ``api_keys_file`` is set.  Then every ``/v1/*``
request must carry one of the keys, as ``Authorization: Bearer <key>`` (what the OpenAI SDK
sends) or ``x-api-key: <key>`` (what the Anthropic SDK sends); anything else gets a 401 in the
OpenAI error shape.

Keys are held only as sha256 digests: the file holds digests to begin with (one hex digest a
line, ``#`` comments), and keys read from the environment are hashed at start.  A presented key
is hashed and compared with :func:`hmac.compare_digest` against every digest, so the time taken
tells nothing about how close a guess was, nor which key matched.  The access log shows a key
as :func:`key_id`, the first 12 hex digits of its digest: enough to tell clients apart, useless
to an attacker (it is a hash of a high-entropy secret).

Why digests rather than the keys: a key file that leaks (backups, a config repository) then
leaks no usable key.  Alternatives considered: a per-key salt (bcrypt, argon2) would make a
check cost milliseconds per request, which a gateway cannot afford; API keys are long random
strings, so an unsalted fast hash is what services such as GitHub's token scanning assume.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from service.config import ConfigError, ServiceConfig
from service.http import Handler, Problem
from service.logs import REQUEST_INFO

logger = logging.getLogger("service.gateway_auth")

_HEX_DIGEST: Final = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> bytes:
    """The sha256 digest of ``key`` (UTF-8), as stored and compared."""
    return hashlib.sha256(key.encode("utf-8", "backslashreplace")).digest()


def key_id(key_digest: bytes) -> str:
    """A key's identity for logs: the first 12 hex digits of its digest."""
    return key_digest.hex()[:12]


class GatewayKeys:
    """The accepted client keys, as digests; empty means the gateway is open."""

    __slots__ = ("_digests",)

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        self._digests = tuple(digests)

    def __repr__(self) -> str:  # never a digest: they identify keys
        return f"<GatewayKeys {len(self._digests)} keys>" if self else "<GatewayKeys off>"

    def __bool__(self) -> bool:
        return bool(self._digests)

    @classmethod
    def from_config(cls, config: ServiceConfig, environ: Mapping[str, str]) -> GatewayKeys:
        """The keys ``[gateway]`` names.  Raises :class:`ConfigError` naming the field when
        the variable is unset or empty, or the file is unreadable or holds a bad line."""
        section = config.gateway
        digests: list[bytes] = []
        if section.api_keys_env is not None:
            text = environ.get(section.api_keys_env, "")
            keys = [key.strip() for key in text.split(",") if key.strip()]
            if not keys:
                raise ConfigError(
                    "gateway.api_keys_env",
                    f"{section.api_keys_env} is unset or holds no key (comma-separated keys)",
                    config.source,
                )
            digests.extend(digest(key) for key in keys)
        if section.api_keys_file is not None:
            digests.extend(_read_digests(section.api_keys_file, config.source))
        return cls(digests)

    def identify(self, presented: str) -> str | None:
        """The :func:`key_id` of ``presented`` if it is one of the keys, else None.  Compares
        with every digest, always (constant time in the key and in which one matched)."""
        candidate = digest(presented)
        found: bytes | None = None
        for known in self._digests:
            if hmac.compare_digest(candidate, known):
                found = known
        return None if found is None else key_id(found)


def _read_digests(path: str, source: str) -> list[bytes]:
    field = "gateway.api_keys_file"
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"cannot read {path}: {exc}", source) from None
    digests = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip().lower()
        if not text:
            continue
        if not _HEX_DIGEST.match(text):
            raise ConfigError(
                field,
                f"{path} line {number}: expected a sha256 hex digest (64 hex digits) of a key; "
                'make one with: printf %s "$KEY" | sha256sum',
                source,
            )
        digests.append(bytes.fromhex(text))
    if not digests:
        raise ConfigError(field, f"{path} holds no key digest", source)
    return digests


def presented_key(request: web.Request) -> str | None:
    """The key a client sent: ``Authorization: Bearer`` first, else ``x-api-key``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip() or None


def gateway_auth_middleware(keys: GatewayKeys) -> Any:
    """The middleware checking ``/v1/*`` requests against ``keys`` (place it inside the
    error middleware, so that its 401 becomes the JSON error)."""

    @web.middleware
    async def gateway_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            presented = presented_key(request)
            client = None if presented is None else keys.identify(presented)
            if client is None:
                raise Problem(
                    401,
                    "missing or unknown API key: send 'Authorization: Bearer <key>' or "
                    "'x-api-key: <key>' with a key this gateway accepts",
                    type="authentication_error",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": 'Bearer realm="breakerd gateway"'},
                )
            info = request.get(REQUEST_INFO)
            if info is not None:
                info.client = client
        return await handler(request)

    return gateway_auth


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def warn_if_open(keys: GatewayKeys, host: str) -> None:
    """The start-up warning for a gateway anyone on the network can spend keys through."""
    if not keys and not is_loopback(host):
        logger.warning(
            "the gateway listens on %s with no client keys: anyone who can reach it spends "
            "the service's provider keys. Set [gateway] api_keys_env or api_keys_file.",
            host,
        )
