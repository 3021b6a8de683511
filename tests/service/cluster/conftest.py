"""Fixtures for the cluster tests: a key namespace of their own on the main Redis (deleted
afterwards), and private Redis servers that a test may stop and restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.service.cluster.helpers import MAIN_URL, RedisServer, delete_namespace


@pytest.fixture
def main_redis() -> Iterator[redis.Redis]:
    """A client of the Redis on 127.0.0.1:6379 (``.ci/run`` starts it when missing)."""
    client = redis.Redis.from_url(MAIN_URL, decode_responses=True, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"the cluster tests need Redis on 127.0.0.1:6379 (see .ci/run): {exc}")
    yield client
    client.close()


@pytest.fixture
def namespace(main_redis: redis.Redis) -> Iterator[str]:
    """A key namespace no other test uses; its keys are deleted at the end."""
    name = f"breakerd-test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_namespace(main_redis, name)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, started; stopped at the end."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
