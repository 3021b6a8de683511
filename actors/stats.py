"""Counting over time, at a constant cost per call.

Two small structures the breaker machine owns: a per-second ring for the failure rate over the
monitoring window, and a fixed-bucket histogram of call durations (the monitor's percentiles and
the telemetry histogram both read it).  Both are allocated on first use, so an idle breaker
costs nothing for them, and both keep their counts in ``array``s: fixed 8 bytes a slot (a list
would point at a separate int object once a count passes 256) and invisible to the garbage
collector, which matters with 100,000 active breakers.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from math import fsum
from typing import Final

# 1 us to ~134 s in steps of 2**(1/4) (about 19 %), so a percentile is off by at most that;
# 108 bounds, 109 buckets (the last one is overflow).
DURATION_BOUNDS: Final[tuple[float, ...]] = tuple(1e-6 * 2 ** (k / 4) for k in range(108))

#: Largest batch whose durations are all bucketed one by one (see ``record_run``).
SAMPLE: Final = 64


class DurationHistogram:
    """Counts of call durations per bucket of :data:`DURATION_BOUNDS`."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * (len(DURATION_BOUNDS) + 1)))
        self.count = 0
        self.total = 0.0

    def record(self, duration: float) -> None:
        self.counts[bisect_left(DURATION_BOUNDS, duration)] += 1
        self.count += 1
        self.total += duration

    def record_run(self, durations: list[float]) -> None:
        """Record a batch.  Count and sum are exact; the bucket counts are exact for up to
        :data:`SAMPLE` durations and, beyond that, an evenly spaced sample with each sampled
        duration standing in for its stride of neighbours, so that a drain of 10,000 successes
        costs 64 bucket look-ups instead of 10,000."""
        count = len(durations)
        self.count += count
        self.total += fsum(durations)
        counts = self.counts
        if count <= SAMPLE:
            for duration in durations:
                counts[bisect_left(DURATION_BOUNDS, duration)] += 1
            return
        stride = count // SAMPLE
        samples = durations[::stride]
        for duration in samples[:-1]:
            counts[bisect_left(DURATION_BOUNDS, duration)] += stride
        counts[bisect_left(DURATION_BOUNDS, samples[-1])] += count - (len(samples) - 1) * stride

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), interpolated inside its bucket; None with no data."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for index, bucket in enumerate(self.counts):
            if bucket and seen + bucket >= rank:
                lower = DURATION_BOUNDS[index - 1] if index > 0 else 0.0
                upper = DURATION_BOUNDS[index] if index < len(DURATION_BOUNDS) else lower
                return lower + (upper - lower) * max(0.0, rank - seen) / bucket
            seen += bucket
        return DURATION_BOUNDS[-1]


class RateWindow:
    """Successes, failures and slow calls per whole second over the last ``seconds`` seconds.

    Slow calls are a subset of the other two (a call can be slow and succeed)."""

    __slots__ = ("failures", "size", "slow", "stamps", "successes")

    def __init__(self, seconds: float) -> None:
        self.size = max(1, math.ceil(seconds))
        self.stamps = array("q", [-1]) * self.size
        self.successes = array("Q", bytes(8 * self.size))
        self.failures = array("Q", bytes(8 * self.size))
        self.slow = array("Q", bytes(8 * self.size))

    def _slot(self, now: float) -> int:
        second = int(now)
        index = second % self.size
        if self.stamps[index] != second:
            self.stamps[index] = second
            self.successes[index] = 0
            self.failures[index] = 0
            self.slow[index] = 0
        return index

    def add(self, now: float, successes: int, failures: int, slow: int = 0) -> None:
        index = self._slot(now)
        self.successes[index] += successes
        self.failures[index] += failures
        if slow:
            self.slow[index] += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """(successes, failures, slow) over the buckets still inside the window at ``now``."""
        oldest = int(now) - self.size
        successes = failures = slow = 0
        for index, stamp in enumerate(self.stamps):
            if stamp > oldest:
                successes += self.successes[index]
                failures += self.failures[index]
                slow += self.slow[index]
        return successes, failures, slow

    def failure_rate(self, now: float) -> float:
        successes, failures, _ = self.totals(now)
        total = successes + failures
        return failures / total if total else 0.0


class CountWindow:
    """The outcomes of the last ``size`` calls: a ring of flags with running totals."""

    __slots__ = ("failures", "filled", "position", "ring", "size", "slow")

    FAILED: Final = 1
    SLOW: Final = 2

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring = bytearray(size)
        self.position = 0
        self.filled = 0
        self.failures = 0
        self.slow = 0

    def add(self, flags: int) -> None:
        position = self.position
        if self.filled == self.size:
            old = self.ring[position]
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.filled += 1
        self.ring[position] = flags
        self.failures += flags & 1
        self.slow += flags >> 1
        self.position = (position + 1) % self.size

    def totals(self) -> tuple[int, int, int]:
        """(calls, failures, slow) in the window."""
        return self.filled, self.failures, self.slow
