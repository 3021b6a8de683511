"""Cluster counting: outcomes summed per breaker and wall-clock second, flushed in batches into
per-second buckets, read back as the sums of the last ``monitoring_window`` seconds.

Count-based windows (``sliding_window_size``) and the consecutive-failure rule stay local:
"the last N calls" and "N in a row" have no cluster-wide order at this batching."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

import redis.asyncio as aioredis

from actors.config import CircuitBreakerConfig
from actors.events import CallsRecorded
from actors.messages import ClusterCounts, UseLocalCounts
from actors.stats import DURATION_BOUNDS
from actors.system import ActorSystem
from service.cluster.keys import Keys
from service.cluster.scripts import Scripts, ms

# Counts buckets outlive the window they serve by this much, for clocks a little apart.
COUNTS_SLACK = 10.0


def counted_cluster_wide(config: CircuitBreakerConfig) -> bool:
    """Whether cluster counting serves this config: a rate policy over a time window."""
    return config.uses_rate_window and config.sliding_window_size is None


def slow_calls(buckets: Iterable[int], slow_after: float | None) -> int:
    """Calls in ``buckets`` (of :data:`DURATION_BOUNDS`) that were surely slower than
    ``slow_after``: only whole buckets above it count, so this errs low by at most the one
    bucket (about 19 % wide) that straddles the threshold."""
    if slow_after is None:
        return 0
    first = bisect_left(DURATION_BOUNDS, slow_after) + 1
    return sum(list(buckets)[first:])


class ClusterCounting:
    """This replica's unflushed counts, and the reads of the cluster's sums."""

    __slots__ = ("_counters", "_keys", "_pending")

    def __init__(self, keys: Keys, counters: dict[str, int]) -> None:
        self._keys = keys
        self._counters = counters
        self._pending: dict[tuple[str, int], list[int]] = {}

    def count(self, system: ActorSystem, event: CallsRecorded) -> None:
        """Add ``event``'s outcomes to its breaker's bucket (the system's loop; no Redis)."""
        breaker = system.get(event.breaker)
        if breaker is None or not counted_cluster_wide(breaker.config):
            return
        slow = slow_calls(event.duration_buckets, breaker.config.slow_call_duration)
        bucket = self._pending.setdefault((event.breaker, int(event.at)), [0, 0, 0])
        bucket[0] += event.successes
        bucket[1] += event.failures
        bucket[2] += slow

    def clear(self) -> None:
        self._pending.clear()

    async def flush(self, client: aioredis.Redis, scripts: Scripts, system: ActorSystem) -> None:
        if not self._pending:
            return
        counts, self._pending = self._pending, {}
        async with client.pipeline(transaction=False) as pipe:
            for (name, second), (successes, failures, slow) in counts.items():
                breaker = system.get(name)
                window = breaker.config.monitoring_window if breaker is not None else 0.0
                await scripts.add(
                    keys=[self._keys.counts(name, second)],
                    args=[successes, failures, slow, ms(window + COUNTS_SLACK)],
                    client=pipe,
                )
            await pipe.execute()
        self._counters["counts_flushed"] += len(counts)

    async def post(
        self, scripts: Scripts, client: aioredis.Redis, system: ActorSystem, second: int
    ) -> None:
        """Post ``ClusterCounts`` (the window up to epoch ``second``) to every breaker
        counted cluster-wide."""
        targets = [
            (name, breaker.config)
            for name, breaker in system.breakers().items()
            if counted_cluster_wide(breaker.config)
        ]
        if not targets:
            return
        starts = [second - max(1, math.ceil(config.monitoring_window)) + 1 for _, config in targets]
        async with client.pipeline(transaction=False) as pipe:
            for (name, _), first in zip(targets, starts, strict=True):
                keys = [self._keys.counts(name, s) for s in range(first, second + 1)]
                await scripts.sum(keys=keys, client=pipe)
            sums = await pipe.execute()
        for (name, _), first, (s, f, w) in zip(targets, starts, sums, strict=True):
            system.post(
                name, ClusterCounts(successes=int(s), failures=int(f), slow=int(w), since=first)
            )
        self._counters["counts_posted"] += len(targets)

    @staticmethod
    def use_local(system: ActorSystem) -> None:
        """Send the breakers counted cluster-wide back to their own counts."""
        for name, breaker in system.breakers().items():
            if counted_cluster_wide(breaker.config):
                system.post(name, UseLocalCounts())
