"""When Redis goes away or hangs: breakers keep deciding locally, and the cluster catches up
when it is back.  Each test runs a private redis-server it can stop, freeze and restart."""

from __future__ import annotations

import contextlib

import anyio
import msgspec
import pytest

from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import CircuitBreakerOpenError
from actors.system import ActorSystem
from service.cluster import RedisCluster, StateRecord
from tests.service.cluster.helpers import (
    Boom,
    RedisServer,
    eventually,
    fail,
    keys_without_ttl,
    ok,
)

pytestmark = pytest.mark.anyio

OPEN = CircuitState.OPEN
CLOSED = CircuitState.CLOSED

NAMESPACE = "outage"


def link(server: RedisServer, replica: str, **options: object) -> RedisCluster:
    settings: dict[str, object] = {
        "operation_timeout": 0.3,
        "reconnect_min": 0.02,
        "reconnect_max": 0.2,
        **options,
    }
    return RedisCluster(server.url, namespace=NAMESPACE, replica_id=replica, **settings)  # type: ignore[arg-type]


def stored(server: RedisServer) -> StateRecord | None:
    with server.client() as client:
        raw = client.hget(f"{NAMESPACE}:state:svc", "record")
    return None if raw is None else msgspec.json.decode(raw, type=StateRecord)


async def test_redis_down_local_decisions_then_resync_newest_generation_wins(
    redis_server: RedisServer,
) -> None:
    # A failed probe backs the break off to 30 s, so the state after the outage is unmistakable.
    config = CircuitBreakerConfig(
        failure_threshold=2,
        timeout_duration=0.3,
        success_threshold=1,
        half_open_max_calls=1,
        backoff_multiplier=100.0,
        max_timeout_duration=60.0,
    )
    link_a, link_b = link(redis_server, "a"), link(redis_server, "b")
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        a, b = first.breaker("svc", config), second.breaker("svc", config)
        await eventually(lambda: link_a.status == link_b.status == "connected")

        # Before: one round trip through the cluster, so both know a generation.
        await fail(a, 2)
        await eventually(lambda: b.state is OPEN)
        await a.reset_async()
        await eventually(lambda: b.state is CLOSED)
        before = stored(redis_server)
        assert before is not None and before.state == "closed"

        # Redis goes away (and will come back empty).
        redis_server.stop()
        await eventually(
            lambda: link_a.statistics()["disconnects"] == link_b.statistics()["disconnects"] == 1
        )
        assert link_a.status != "connected" and link_b.status != "connected"
        await fail(a, 2)  # decided locally
        assert a.state is OPEN
        assert await b.call_async(ok) == "ok"  # b knows nothing of it: still closed

        # The break ends: the lease is granted locally and a probes (and fails).
        probes = []

        async def probe() -> None:
            probes.append(True)
            raise Boom("still down")

        async def probed() -> bool:
            with contextlib.suppress(CircuitBreakerOpenError, Boom):
                await a.call_async(probe)
            return bool(probes)

        await eventually(probed, what="a local probe")
        assert link_a.statistics()["leases_local"] >= 1
        after_probe = await a.metrics_async()
        assert after_probe.state is OPEN
        assert after_probe.retry_after is not None and after_probe.retry_after > 10
        assert link_a.statistics()["pending_transitions"] == 1

        # Redis is back, empty: a's transitions are the newest and reach b.
        redis_server.start()
        await eventually(lambda: link_a.status == link_b.status == "connected", timeout=15)
        await eventually(lambda: b.state is OPEN, what="b resynchronised")
        b_snapshot = await b.metrics_async()
        assert b_snapshot.retry_after is not None and b_snapshot.retry_after > 10
        after = stored(redis_server)
        assert after is not None
        assert (after.state, after.origin) == ("open", "a")
        assert after.generation > before.generation
        assert link_a.statistics()["pending_transitions"] == 0
        with redis_server.client() as client:
            assert keys_without_ttl(client, NAMESPACE) == []


async def test_a_frozen_redis_cannot_hold_a_probe_back(redis_server: RedisServer) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1, timeout_duration=0.2, success_threshold=1, half_open_max_calls=1
    )
    # No pings: only the lease request's own time limit can notice the freeze.
    cluster = link(redis_server, "a", operation_timeout=0.2, ping_interval=60.0)
    async with ActorSystem(cluster=cluster) as system:
        breaker = system.breaker("svc", config)
        await eventually(lambda: cluster.status == "connected")
        await fail(breaker, 1)
        await eventually(
            lambda: (record := stored(redis_server)) is not None and record.state == "open"
        )

        redis_server.pause()
        try:
            admitted = []

            async def probe_admitted() -> bool:
                with contextlib.suppress(CircuitBreakerOpenError):
                    admitted.append(await breaker.call_async(ok))
                return bool(admitted)

            with anyio.fail_after(5):
                await eventually(probe_admitted, what="a probe despite the frozen Redis")
            assert cluster.statistics()["leases_local"] == 1
            assert breaker.state is CLOSED
        finally:
            redis_server.resume()

        # Once Redis answers again, the verdict is published.
        await eventually(
            lambda: (record := stored(redis_server)) is not None and record.state == "closed",
            timeout=15,
            what="the verdict published after the freeze",
        )


async def test_rate_policies_count_locally_while_the_link_is_down(
    redis_server: RedisServer,
) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1000,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        monitoring_window=10.0,
        timeout_duration=30.0,
    )
    cluster = link(redis_server, "a", cluster_counting=True)
    async with ActorSystem(cluster=cluster) as system:
        breaker = system.breaker("svc", config)
        await eventually(lambda: cluster.status == "connected")
        # The breaker follows the cluster's counts (none yet) instead of its own window...
        await eventually(lambda: cluster.statistics()["counts_posted"] >= 1)
        redis_server.stop()
        await eventually(lambda: cluster.statistics()["disconnects"] == 1)
        # ...until the link is lost: then its own 10 failures of 10 open it.
        await fail(breaker, 10)
        await eventually(lambda: breaker.state is OPEN, what="opened on local counts")


async def test_a_record_redis_lost_is_restored_for_late_joiners(redis_server: RedisServer) -> None:
    config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=30.0)
    link_a = link(redis_server, "a")
    async with ActorSystem(cluster=link_a) as first:
        await eventually(lambda: link_a.status == "connected")
        await fail(first.breaker("svc", config), 1)
        await eventually(lambda: stored(redis_server) is not None)
        before = stored(redis_server)

        redis_server.stop()  # and back, empty, with nothing new to publish
        await eventually(lambda: link_a.statistics()["disconnects"] == 1)
        redis_server.start()
        await eventually(lambda: link_a.statistics()["seeded"] == 1, timeout=15)
        after = stored(redis_server)
        assert before is not None and after is not None
        assert (after.state, after.origin, after.generation) == ("open", "a", before.generation)

        link_b = link(redis_server, "b")
        async with ActorSystem(cluster=link_b) as late:
            b = late.breaker("svc", config)
            await eventually(lambda: b.state is OPEN, what="late joiner OPEN from the seed")
