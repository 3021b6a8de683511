"""A part whose extra is missing says which extra to install (checked in a subprocess where
the dependency cannot be imported), and the core needs none of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK = "import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=blocked) + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        (("aiohttp",), "service.http", "service"),
        (("aiohttp",), "service.lifecycle", "service"),
        (("httptools",), "service.llm_client", "service"),
        (("opentelemetry", "opentelemetry.metrics"), "telemetry", "otel"),
        (("redis", "redis.asyncio"), "service.cluster", "cluster"),
    ],
)
def test_a_missing_extra_is_named(blocked: tuple[str, ...], module: str, extra: str) -> None:
    done = run_blocked(blocked, f"import {module}")
    assert done.returncode == 1
    assert f"pip install 'breakerd[{extra}]'" in done.stderr.splitlines()[-1], done.stderr


def test_the_core_needs_no_extra() -> None:
    blocked = ("aiohttp", "httptools", "opentelemetry", "redis", "httpx", "rich")
    code = (
        "from service.circuit_breaker import CircuitBreaker, CircuitBreakerConfig\n"
        "breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), 'core')\n"
        "print(breaker.call(lambda: 'ok'))\n"
    )
    done = run_blocked(blocked, code)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
