"""The Redis link between replicas in one process: each replica is an actor system of its own
with its own link, which is all Redis can tell apart.  Against the real Redis on 6379."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import anyio
import pytest
import redis

from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import CircuitBreakerOpenError, ConfigurationError
from actors.system import ActorSystem
from service.cluster import RedisCluster, redact_url, slow_calls
from tests.service.cluster.helpers import MAIN_URL, eventually, fail, keys_without_ttl, ok

pytestmark = pytest.mark.anyio

OPEN = CircuitState.OPEN
CLOSED = CircuitState.CLOSED
HALF_OPEN = CircuitState.HALF_OPEN

ROOT = Path(__file__).resolve().parents[3]

SLOW_BREAK = CircuitBreakerConfig(failure_threshold=2, timeout_duration=30.0)


def link(namespace: str, replica: str, **options: object) -> RedisCluster:
    return RedisCluster(MAIN_URL, namespace=namespace, replica_id=replica, **options)  # type: ignore[arg-type]


async def connected(*links: RedisCluster) -> None:
    await eventually(
        lambda: all(item.status == "connected" for item in links), what="links connected"
    )


async def test_a_late_joiner_starts_in_the_open_state(
    namespace: str, main_redis: redis.Redis
) -> None:
    link_a = link(namespace, "a")
    async with ActorSystem(cluster=link_a) as first:
        a = first.breaker("svc", SLOW_BREAK)
        await connected(link_a)
        await fail(a, 2)
        await eventually(lambda: main_redis.hget(f"{namespace}:state:svc", "record") is not None)
        a_retry = (await a.metrics_async()).retry_after
        assert a_retry is not None

        link_b = link(namespace, "b")
        late = ActorSystem(cluster=link_b)
        b = late.breaker("svc", SLOW_BREAK)  # exists before the link connects: read at resync
        async with late:
            await connected(link_b)
            await eventually(lambda: b.state is OPEN, what="late joiner OPEN")
            snapshot = await b.metrics_async()
            assert snapshot.retry_after is not None
            assert abs(snapshot.retry_after - a_retry) < 2.0  # the same break, not a new one
            ran = []

            async def guarded() -> None:
                ran.append(True)

            with pytest.raises(CircuitBreakerOpenError):
                await b.call_async(guarded)
            assert ran == []
    assert keys_without_ttl(main_redis, namespace) == []


async def test_a_breaker_created_after_the_link_started_catches_up(namespace: str) -> None:
    link_a, link_b = link(namespace, "a"), link(namespace, "b")
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        a = first.breaker("svc", SLOW_BREAK)
        await connected(link_a, link_b)
        await fail(a, 2)
        # b has no breaker of that name yet: the news is not for it...
        await eventually(lambda: link_b.statistics()["received"] >= 1)
        # ...until the breaker is created on first use, and reads the record.
        b = second.breaker("svc", SLOW_BREAK)
        await eventually(lambda: b.state is OPEN, what="created breaker OPEN")


async def test_remote_transitions_are_applied_and_not_echoed(
    namespace: str, main_redis: redis.Redis
) -> None:
    link_a, link_b = link(namespace, "a"), link(namespace, "b")
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        a, b = first.breaker("svc", SLOW_BREAK), second.breaker("svc", SLOW_BREAK)
        await connected(link_a, link_b)
        await fail(a, 2)
        await eventually(lambda: b.state is OPEN)
        record_key = f"{namespace}:state:svc"
        opened = main_redis.hgetall(record_key)
        assert link_b.statistics()["published"] == 0
        assert '"origin":"a"' in opened["record"]

        # A management action on either replica is cluster-wide: b's reset closes a.
        await b.reset_async()
        await eventually(lambda: a.state is CLOSED, what="a follows b's reset")
        closed = main_redis.hgetall(record_key)
        assert int(closed["generation"]) == int(opened["generation"]) + 1
        assert '"origin":"b"' in closed["record"]
        await eventually(lambda: link_a.statistics()["applied"] == 1)
        assert link_a.statistics()["published"] == 1  # its own OPEN only; CLOSED not echoed


async def test_cluster_counting_opens_on_the_whole_cluster_s_failure_rate(
    namespace: str, main_redis: redis.Redis
) -> None:
    # Each replica alone sees 6 calls, under minimum_calls=10: only the cluster's 12 count.
    config = CircuitBreakerConfig(
        failure_threshold=1000,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        monitoring_window=10.0,
        timeout_duration=30.0,
    )
    link_a = link(namespace, "a", cluster_counting=True)
    link_b = link(namespace, "b", cluster_counting=True)
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        a, b = first.breaker("svc", config), second.breaker("svc", config)
        await connected(link_a, link_b)
        await fail(a, 6)
        await fail(b, 6)
        await eventually(lambda: a.state is OPEN and b.state is OPEN, what="both OPEN")
        assert link_a.statistics()["counts_flushed"] >= 1
        assert link_a.statistics()["counts_posted"] >= 1
        buckets = list(main_redis.scan_iter(match=f"{namespace}:counts:svc:*"))
        assert buckets
        failures = sum(int(main_redis.hget(key, "f") or 0) for key in buckets)
        assert failures == 12
    assert keys_without_ttl(main_redis, namespace) == []


async def test_a_replica_holding_the_lease_makes_the_others_wait(namespace: str) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1, timeout_duration=0.2, success_threshold=1, half_open_max_calls=1
    )
    link_a, link_b = link(namespace, "a"), link(namespace, "b")
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        a, b = first.breaker("svc", config), second.breaker("svc", config)
        await connected(link_a, link_b)
        await fail(a, 1)
        await eventually(lambda: b.state is OPEN)
        # Whoever wins the lease goes HALF_OPEN; the other keeps rejecting.
        await eventually(
            lambda: HALF_OPEN in (a.state, b.state), what="one replica holds the probe lease"
        )
        holder, other = (a, b) if a.state is HALF_OPEN else (b, a)
        assert other.state is OPEN
        with pytest.raises(CircuitBreakerOpenError):
            await other.call_async(ok)
        assert await holder.call_async(ok) == "ok"  # the probe succeeds: closed for all
        await eventually(lambda: other.state is CLOSED, what="the verdict reaches the other")
        assert await other.call_async(ok) == "ok"
        granted = link_a.statistics()["leases_granted"] + link_b.statistics()["leases_granted"]
        assert granted == 1


async def test_a_restarted_replica_with_a_fixed_id_follows_its_own_record(
    namespace: str,
) -> None:
    first = link(namespace, "pod-1")
    async with ActorSystem(cluster=first) as before:
        await connected(first)
        await fail(before.breaker("svc", SLOW_BREAK), 2)
        await eventually(lambda: first.statistics()["published"] == 1)
    # The same replica id, a new process (here: a new system): the record is news to it.
    cluster = link(namespace, "pod-1")
    async with ActorSystem(cluster=cluster) as after:
        breaker = after.breaker("svc", SLOW_BREAK)
        await connected(cluster)
        await eventually(lambda: breaker.state is OPEN, what="restarted replica OPEN")


async def test_when_the_lease_holder_vanishes_another_replica_probes_after_the_lease_ttl(
    namespace: str,
) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1, timeout_duration=0.1, success_threshold=1, half_open_max_calls=1
    )
    link_a, link_b = link(namespace, "a", lease_ttl=0.5), link(namespace, "b", lease_ttl=0.5)
    async with ActorSystem(cluster=link_b) as second:
        await connected(link_b)
        async with ActorSystem(cluster=link_a) as first:
            a = first.breaker("svc", config)
            await connected(link_a)
            await fail(a, 1)
            await eventually(lambda: a.state is HALF_OPEN, what="a holds the lease")
            # b joins now: it reads a HALF_OPEN record and waits out the lease.
            b = second.breaker("svc", config)
            await eventually(lambda: b.state is OPEN)
            with pytest.raises(CircuitBreakerOpenError):
                await b.call_async(ok)
        # a is gone without a verdict; its lease runs out and b probes instead.
        await eventually(lambda: b.state is HALF_OPEN, timeout=5, what="b takes over")
        assert await b.call_async(ok) == "ok"
        assert b.state is CLOSED


async def test_an_unregistered_breaker_decides_alone(namespace: str) -> None:
    config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
    cluster = link(namespace, "a")
    async with ActorSystem(cluster=cluster) as system:
        loner = system.create_breaker("loner", config)
        await fail(loner, 1)
        await eventually(lambda: loner.state is HALF_OPEN, what="HALF_OPEN without a lease")
        assert cluster.statistics()["published"] == 0


async def test_status_and_statistics_never_show_the_password(namespace: str) -> None:
    cluster = RedisCluster(
        "redis://user:s3cret@127.0.0.1:1/0", namespace=namespace, reconnect_max=0.1
    )
    assert cluster.status == "disconnected"
    async with ActorSystem(cluster=cluster):
        await eventually(lambda: cluster.statistics()["last_error"] is not None)
        assert cluster.status in ("connecting", "disconnected")
        shown = f"{cluster!r} {cluster.statistics()}"
    assert "s3cret" not in shown
    assert "user:***@127.0.0.1:1" in shown


async def test_a_system_with_a_link_that_cannot_connect_still_closes_promptly() -> None:
    cluster = RedisCluster("redis://127.0.0.1:1/0", reconnect_max=0.1)
    with anyio.fail_after(5):
        async with ActorSystem(cluster=cluster) as system:
            await eventually(lambda: cluster.statistics()["last_error"] is not None)
            breaker = system.breaker("svc", CircuitBreakerConfig(failure_threshold=1))
            await fail(breaker, 1)
            assert breaker.state is OPEN  # deciding locally
    assert cluster.status == "disconnected"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"url": "http://127.0.0.1:6379"}, "url"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "a b"}, "namespace"),
        ({"lease_ttl": 0}, "lease_ttl"),
        ({"flush_interval": math.inf}, "flush_interval"),
        ({"reconnect_min": 2.0, "reconnect_max": 1.0}, "reconnect_max"),
        ({"cluster_counting": "yes"}, "cluster_counting"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field}:"):
        RedisCluster(**options)  # type: ignore[arg-type]


def test_a_bad_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisCluster("http://user:s3cret@host/")
    assert "s3cret" not in str(caught.value)


def test_redact_url() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert redact_url("rediss://me:pw@h/0") == "rediss://me:***@h/0"


def test_slow_calls_counts_whole_buckets_above_the_threshold() -> None:
    from actors.stats import DURATION_BOUNDS

    buckets = [0] * (len(DURATION_BOUNDS) + 1)
    index = DURATION_BOUNDS.index(next(b for b in DURATION_BOUNDS if b > 0.1))
    buckets[index] = 5  # straddles 0.1 s: not surely slow
    buckets[index + 1] = 3
    buckets[-1] = 2
    assert slow_calls(buckets, 0.1) == 5
    assert slow_calls(buckets, None) == 0


def test_only_the_cluster_package_imports_redis() -> None:
    importers = set()
    for package in ("actors", "service", "telemetry"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                if any(name.split(".")[0] == "redis" for name in names):
                    importers.add(path.relative_to(ROOT).as_posix())
    assert importers and all(path.startswith("service/cluster/") for path in importers)
