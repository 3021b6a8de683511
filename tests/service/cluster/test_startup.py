"""Changes made before the link is up are published once it is (issue 13, item 4)."""

from __future__ import annotations

import pytest
import redis

from actors.config import CircuitBreakerConfig, CircuitState
from actors.system import ActorSystem
from service.cluster import RedisCluster
from tests.service.cluster.helpers import MAIN_URL, eventually, fail

pytestmark = pytest.mark.anyio

TRIP_ONCE = CircuitBreakerConfig(failure_threshold=1, timeout_duration=30.0)


def link(namespace: str, replica: str) -> RedisCluster:
    return RedisCluster(MAIN_URL, namespace=namespace, replica_id=replica)


@pytest.mark.parametrize("attempt", range(3))
async def test_a_breaker_tripped_before_the_first_loop_tick_is_published(
    namespace: str, main_redis: redis.Redis, attempt: int
) -> None:
    link_b = link(namespace, "b")
    async with ActorSystem(cluster=link_b) as other:
        b = other.breaker("svc", TRIP_ONCE)
        await eventually(lambda: link_b.status == "connected", what="b connected")
        link_a = link(namespace, "a")
        async with ActorSystem(cluster=link_a) as system:
            a = system.breaker("svc", TRIP_ONCE)
            await fail(a, 1)  # before the link's task has run at all
            assert a.state is CircuitState.OPEN
            await eventually(
                lambda: main_redis.hget(f"{namespace}:state:svc", "record") is not None,
                what="the record written",
            )
            await eventually(lambda: b.state is CircuitState.OPEN, what="the other replica OPEN")
            assert link_a.statistics()["published"] == 1
