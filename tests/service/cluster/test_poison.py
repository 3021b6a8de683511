"""Hostile and garbage input on the channel and in the keys is dropped, and normal
propagation goes on afterwards (issue 13, item 3).  Against the real Redis on 6379."""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis

from actors.config import CircuitBreakerConfig, CircuitState
from actors.system import ActorSystem
from service.cluster import RedisCluster
from service.cluster.records import (
    MAX_GENERATION,
    MAX_RECORD_BYTES,
    InvalidRecord,
    StateRecord,
    decode_record,
    remote_state,
)
from tests.service.cluster.helpers import MAIN_URL, eventually, fail

pytestmark = pytest.mark.anyio

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN
TRIP = CircuitBreakerConfig(failure_threshold=1, timeout_duration=30.0)
NOW = 1_700_000_000.0


def link(namespace: str, replica: str, **options: object) -> RedisCluster:
    return RedisCluster(MAIN_URL, namespace=namespace, replica_id=replica, **options)  # type: ignore[arg-type]


def good(**changes: object) -> dict[str, object]:
    """A valid received record of "svc", as a dict to spoil one field of."""
    record: dict[str, object] = {
        "generation": 1,
        "breaker": "svc",
        "state": "open",
        "open_until": NOW + 30,
        "origin": "x",
        "at": NOW,
    }
    record.update(changes)
    return record


def text(record: dict[str, object]) -> str:
    return json.dumps(record)


def deep(levels: int) -> str:
    return text(good()).replace(
        '"origin"', '"extra": ' + "[" * levels + "]" * levels + ', "origin"'
    )


# Each row: why it is garbage, and the raw text.
HOSTILE = [
    ("generation 2^63-1", text(good(generation=2**63 - 1))),
    ("generation 2^64", text(good(generation=2**64))),
    ("generation past 2^53-1", text(good(generation=MAX_GENERATION + 1))),
    ("generation negative", text(good(generation=-5))),
    ("generation zero", text(good(generation=0))),
    ("generation a string", text(good(generation="7"))),
    ("generation a float", text(good(generation=7.5))),
    ("state unknown", text(good(state="melted"))),
    ("state a number", text(good(state=3))),
    ("forced a string", text(good(forced="yes"))),
    ("breaker a number", text(good(breaker=7))),
    ("breaker empty", text(good(breaker=""))),
    ("origin missing", text({k: v for k, v in good().items() if k != "origin"})),
    ("at infinite", text(good()).replace(f'"at": {NOW}', '"at": 1e400')),
    ("at negative", text(good(at=-1.0))),
    ("open_until huge", text(good(open_until=1e300))),
    ("2,000-deep nesting", deep(2000)),
    ("100,000-deep nesting", deep(100_000)),
    ("oversized", text(good(origin="o" * 100_000))),
    ("not JSON", "hello"),
    ("a JSON array", "[1, 2, 3]"),
    ("truncated", text(good())[:-5]),
]


@pytest.mark.parametrize(("why", "raw"), HOSTILE, ids=[why for why, _ in HOSTILE])
def test_decode_refuses(why: str, raw: str) -> None:
    with pytest.raises(InvalidRecord):
        decode_record(raw)


def test_decode_accepts_a_record_up_to_the_limits() -> None:
    record = decode_record(text(good(generation=MAX_GENERATION, origin="o" * 1000)))
    assert record.generation == MAX_GENERATION
    assert len(text(good(origin="o" * 1000))) < MAX_RECORD_BYTES
    assert decode_record(text(good(unknown_field={"a": 1}))).breaker == "svc"  # newer writers


def test_a_remote_break_is_clamped_to_the_longest_local_break() -> None:
    config = CircuitBreakerConfig(timeout_duration=30.0, max_timeout_duration=120.0)
    far = StateRecord(
        breaker="svc", state="open", open_until=NOW + 1e9, origin="x", at=NOW, generation=3
    )
    assert remote_state(far, NOW, 5.0, config).remaining == 120.0
    near = StateRecord(
        breaker="svc", state="open", open_until=NOW + 10, origin="x", at=NOW, generation=3
    )
    assert remote_state(near, NOW, 5.0, config).remaining == 10.0


async def test_hostile_records_on_the_channel_are_dropped_then_propagation_goes_on(
    namespace: str, main_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    link_a, link_b = link(namespace, "a"), link(namespace, "b")
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        a, b = first.breaker("svc", TRIP), second.breaker("svc", TRIP)
        await eventually(lambda: link_a.status == link_b.status == "connected")
        caplog.set_level(logging.WARNING, logger="service.cluster")
        hostile = [raw for _, raw in HOSTILE]
        # Valid in form, but further ahead than any record may move a replica.
        hostile.append(text(good(generation=MAX_GENERATION)))
        hostile.append(text(good(generation=2**33)))
        for raw in hostile:
            main_redis.publish(f"{namespace}:events", raw)
        await eventually(
            lambda: link_b.statistics()["received"] >= len(hostile), what="all received"
        )
        assert link_b.statistics()["malformed"] == len(hostile)
        assert link_b.statistics()["applied"] == 0
        assert (a.state, b.state) == (CLOSED, CLOSED)
        warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(warnings) == 2  # one per link and interval, not one per record
        assert len(warnings[0].getMessage()) < 500  # no echo of the oversized ones

        await fail(a, 1)
        await eventually(lambda: b.state is OPEN, what="b follows a's trip")
        await b.reset_async()
        await eventually(lambda: a.state is CLOSED, what="a follows b's reset")
        assert int(main_redis.hget(f"{namespace}:state:svc", "generation") or 0) == 2


async def test_garbage_in_the_keys_never_stops_propagation(
    namespace: str, main_redis: redis.Redis
) -> None:
    ns = namespace
    # The state key of a breaker as another type; generations past any valid one; a valid-looking
    # record far ahead; a record of another breaker under this one's key; a lease key of the
    # wrong type; count buckets with garbage counts.
    main_redis.set(f"{ns}:state:wrongtype", "garbage")
    main_redis.hset(
        f"{ns}:state:huge", mapping={"generation": str(2**63 - 1), "record": "{not json"}
    )
    main_redis.hset(
        f"{ns}:state:ahead",
        mapping={
            "generation": str(MAX_GENERATION),
            "record": text(good(breaker="ahead", generation=MAX_GENERATION)),
        },
    )
    main_redis.hset(
        f"{ns}:state:stolen",
        mapping={"generation": "5", "record": text(good(breaker="other", generation=5))},
    )
    main_redis.hset(f"{ns}:state:negative", mapping={"generation": "-3", "record": "[]"})
    main_redis.hset(f"{ns}:state:deep", mapping={"generation": "3", "record": deep(2000)})
    main_redis.hset(
        f"{ns}:state:oversized",
        mapping={"generation": "3", "record": text(good(breaker="oversized", origin="o" * 10**5))},
    )
    main_redis.hset(f"{ns}:lease:wrongtype", mapping={"holder": "x"})
    for key in main_redis.scan_iter(match=f"{ns}:*"):
        main_redis.expire(key, 60)  # tidy even if the test fails half-way
    names = ["wrongtype", "huge", "ahead", "stolen", "negative", "deep", "oversized"]

    link_a, link_b = link(ns, "a"), link(ns, "b")
    async with ActorSystem(cluster=link_a) as first, ActorSystem(cluster=link_b) as second:
        pairs = [(first.breaker(name, TRIP), second.breaker(name, TRIP)) for name in names]
        await eventually(lambda: link_a.status == link_b.status == "connected")
        assert link_b.statistics()["applied"] == 0
        assert all(a.state is CLOSED and b.state is CLOSED for a, b in pairs)
        for name, (a, b) in zip(names, pairs, strict=True):
            await fail(a, 1)
            await eventually(lambda b=b: b.state is OPEN, what=f"b follows a's trip of {name}")
            await b.reset_async()
            await eventually(lambda a=a: a.state is CLOSED, what=f"a follows b's reset of {name}")
            generation = int(main_redis.hget(f"{ns}:state:{name}", "generation") or 0)
            assert 1 <= generation <= 7, name  # small: nothing pinned it far ahead


async def test_a_lease_key_of_the_wrong_type_is_replaced(
    namespace: str, main_redis: redis.Redis
) -> None:
    main_redis.hset(f"{namespace}:lease:svc", mapping={"holder": "x"})
    main_redis.expire(f"{namespace}:lease:svc", 3600)  # would block probes for an hour
    config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
    cluster = link(namespace, "a")
    async with ActorSystem(cluster=cluster) as system:
        breaker = system.breaker("svc", config)
        await eventually(lambda: cluster.status == "connected")
        await fail(breaker, 1)
        await eventually(lambda: breaker.state is HALF_OPEN, what="HALF_OPEN with the lease")
        assert cluster.statistics()["leases_granted"] == 1
        assert main_redis.get(f"{namespace}:lease:svc") == "a"


async def test_garbage_count_buckets_neither_count_nor_stop_counting(
    namespace: str, main_redis: redis.Redis
) -> None:
    config = CircuitBreakerConfig(
        failure_threshold=1000,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        monitoring_window=10.0,
        timeout_duration=30.0,
    )
    second = int(time.time())
    for offset in range(-2, 4):  # the buckets the link reads and writes in the next seconds
        key = f"{namespace}:counts:svc:{second + offset}"
        if offset % 2:
            main_redis.hset(key, mapping={"s": "1e308", "f": "-5", "w": "abc"})
        else:
            main_redis.set(key, "garbage")
        main_redis.expire(key, 60)
    cluster = link(namespace, "a", cluster_counting=True, counts_interval=0.05)
    async with ActorSystem(cluster=cluster) as system:
        breaker = system.breaker("svc", config)
        await eventually(lambda: cluster.status == "connected")
        await fail(breaker, 6)  # under minimum_calls: only the cluster's counts could open it
        await eventually(lambda: cluster.statistics()["counts_posted"] >= 3)
        assert breaker.state is CLOSED  # the garbage counted as nothing
        await fail(breaker, 6)
        await eventually(lambda: breaker.state is OPEN, what="opened on the counted failures")
        assert cluster.status == "connected"
        assert cluster.statistics()["disconnects"] == 0
