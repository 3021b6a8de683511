"""Shared fixtures: the asyncio backend for anyio's pytest plugin, a manual clock, unique names."""

from __future__ import annotations

import itertools

import pytest

from actors.clock import ManualClock

_names = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A breaker name no other test uses (the default registry is process-wide)."""
    return f"{request.node.name}-{next(_names)}"
