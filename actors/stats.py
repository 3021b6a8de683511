"""Counting over time, at a constant cost per call and a small cost per breaker.

Two small structures the breaker machine owns: a per-second record of outcomes for the failure
rate over the monitoring window, and a fixed-bucket histogram of call durations (the monitor's
percentiles and the telemetry histogram both read it).  Both are allocated on first use, so an
idle breaker costs nothing for them.

Sized for 100,000 breakers: counts live in ``array``s (no int object per count, invisible to
the garbage collector) of the *smallest* item type, one byte, that widens (to 2, 4, then 8
bytes) the first time a count would overflow it; a breaker that ran one call carries a few
hundred bytes, not kilobytes.  The rate record starts sparse (a handful of seconds, searched
linearly) and becomes a ring with one slot per second of the window only once more distinct
seconds than that are live: most breakers of a breaker-per-host service see few calls.
Alternatives considered: a dict per second (~200 bytes per entry), and coarser buckets (which
would change when an old failure leaves the window).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from itertools import accumulate
from math import fsum
from typing import Final

import msgspec

# 1 us to ~134 s in steps of 2**(1/4) (about 19 %), so a percentile is off by at most that;
# 108 bounds, 109 buckets (the last one is overflow).
DURATION_BOUNDS: Final[tuple[float, ...]] = tuple(1e-6 * 2 ** (k / 4) for k in range(108))

#: Largest batch whose durations are all bucketed one by one (see ``record_run``).
SAMPLE: Final = 64

#: Item types from narrowest to widest ('q' for stamps, which may be negative).
_WIDER: Final = {"B": "H", "H": "I", "I": "Q", "i": "q"}

#: Durations a histogram keeps as bucket indices before it makes its 109 counts.
FEW: Final = 8

#: One-byte strings, made once: a histogram's first index is one of these, not a copy.
_BYTE: Final = tuple(bytes((index,)) for index in range(256))

#: The stamp of a slot that never held a second (older than any window).
UNUSED: Final = -(2**31)

#: Distinct live seconds the rate record holds before it becomes a full ring.
SPARSE: Final = 4


def widened(counts: array[int]) -> array[int]:
    """A copy of ``counts`` in the next wider item type (``OverflowError`` at 8 bytes)."""
    wider = _WIDER.get(counts.typecode)
    if wider is None:
        raise OverflowError(f"count does not fit in array type {counts.typecode!r}")
    return array(wider, counts)


class DurationHistogram(msgspec.Struct, gc=False):
    """Counts of call durations per bucket of :data:`DURATION_BOUNDS`.

    Sparse at first: up to :data:`FEW` single durations are kept as their bucket indices
    (one byte each) and the 109 counts are made when the next one arrives, or when a reader
    asks for :attr:`counts`.  Not tracked by the garbage collector (it holds no references
    that could form a cycle), which keeps collections short with 100,000 breakers.
    """

    count: int = 0
    total: float = 0.0
    few: bytes = b""
    dense: array[int] | None = None
    #: While a list: every duration recorded appends its bucket index and count to it.  The
    #: breaker actor keeps one for the length of a drain while telemetry listens, so that
    #: the drain's report is built from what it recorded (usually one or two entries), not by
    #: copying and diffing all 109 counts.
    journal: list[int] | None = None

    @property
    def counts(self) -> array[int]:
        """The count of each bucket (made on first read while sparse)."""
        dense = self.dense
        if dense is None:
            dense = self.dense = array("B", bytes(len(DURATION_BOUNDS) + 1))
            for index in self.few:
                self._add(index, 1)
            self.few = b""
        return dense

    def _add(self, index: int, count: int) -> None:
        counts = self.counts
        try:
            counts[index] += count
        except OverflowError:
            while True:
                counts = self.dense = widened(counts)
                try:
                    counts[index] += count
                    return
                except OverflowError:
                    continue

    def record(self, duration: float) -> None:
        index = bisect_left(DURATION_BOUNDS, duration)
        journal = self.journal
        if journal is not None:
            journal += (index, 1)
        few = self.few
        if self.dense is None and len(few) < FEW:
            self.few = few + _BYTE[index] if few else _BYTE[index]
        else:
            self._add(index, 1)
        self.count += 1
        self.total += duration

    def record_run(self, durations: list[float]) -> None:
        """Record a batch.  Count and sum are exact; the bucket counts are exact for up to
        :data:`SAMPLE` durations and, beyond that, an evenly spaced sample with each sampled
        duration standing in for its stride of neighbours, so that a drain of 10,000 successes
        costs 64 bucket look-ups instead of 10,000."""
        count = len(durations)
        if count == 1:
            self.record(durations[0])
            return
        self.count += count
        self.total += fsum(durations)
        add = self._add
        journal = self.journal
        if count <= SAMPLE:
            for duration in durations:
                index = bisect_left(DURATION_BOUNDS, duration)
                add(index, 1)
                if journal is not None:
                    journal += (index, 1)
            return
        stride = count // SAMPLE
        samples = durations[::stride]
        last = count - (len(samples) - 1) * stride
        for position, duration in enumerate(samples):
            index = bisect_left(DURATION_BOUNDS, duration)
            weight = stride if position < len(samples) - 1 else last
            add(index, weight)
            if journal is not None:
                journal += (index, weight)

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), interpolated inside its bucket; None with no data.

        Reads a sparse histogram as it is (no counts are made for it); a dense one through a
        running sum made in C and a binary search, not a Python walk of 109 buckets."""
        if self.count == 0:
            return None
        rank = q * self.count
        dense = self.dense
        if dense is None:
            seen = 0
            for index in sorted(set(self.few)):
                bucket = self.few.count(index)
                if seen + bucket >= rank:
                    return _interpolate(index, bucket, seen, rank)
                seen += bucket
            return DURATION_BOUNDS[-1]
        running = list(accumulate(dense))
        index = bisect_left(running, rank)
        if index == len(running):
            return DURATION_BOUNDS[-1]
        while not dense[index]:  # rank 0: the first bucket that holds anything
            index += 1
        return _interpolate(index, dense[index], running[index] - dense[index], rank)


def _interpolate(index: int, bucket: int, seen: int, rank: float) -> float:
    """The point ``rank`` reaches inside bucket ``index`` (``bucket`` durations, after
    ``seen`` in the buckets below it), assuming durations spread evenly across it."""
    lower = DURATION_BOUNDS[index - 1] if index > 0 else 0.0
    upper = DURATION_BOUNDS[index] if index < len(DURATION_BOUNDS) else lower
    return lower + (upper - lower) * max(0.0, rank - seen) / bucket


class RateWindow(msgspec.Struct, gc=False):
    """Successes, failures and slow calls per whole second over the last ``seconds`` seconds
    (``size``: rounded up to whole seconds, at least one).

    Slow calls are a subset of the other two (a call can be slow and succeed).  The latest
    second's counts are plain fields (``second``, ``successes``, ``failures``, ``slow``), so a
    breaker whose calls all fell in one second holds no array at all.  Earlier seconds move
    to the arrays when a later one begins: slot ``i`` has its second in ``stamps[i]`` and its
    counts at ``counts[3i]`` (successes), ``3i + 1`` (failures) and ``3i + 2`` (slow).  While
    sparse, a second takes any slot whose second has left the window; as a ring (``ring``
    True), second ``s`` always takes slot ``s % size``.  Not tracked by the garbage collector,
    as :class:`DurationHistogram`.
    """

    seconds: float
    size: int = 0
    second: int = UNUSED
    successes: int = 0
    failures: int = 0
    slow: int = 0
    ring: bool = False
    stamps: array[int] | None = None
    counts: array[int] | None = None

    def __post_init__(self) -> None:
        self.size = max(1, math.ceil(self.seconds))

    def add(self, now: float, successes: int, failures: int, slow: int = 0) -> None:
        second = int(now)
        if second != self.second:
            if self.second != UNUSED:
                self._store(self.second, self.successes, self.failures, self.slow)
            self.second = second
            self.successes, self.failures, self.slow = successes, failures, slow
            return
        self.successes += successes
        self.failures += failures
        self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """(successes, failures, slow) over the seconds still inside the window at ``now``."""
        oldest = int(now) - self.size
        successes = failures = slow = 0
        if self.second > oldest:
            successes, failures, slow = self.successes, self.failures, self.slow
        stamps, counts = self.stamps, self.counts
        if stamps is not None and counts is not None:
            for index, stamp in enumerate(stamps):
                if stamp > oldest:
                    base = 3 * index
                    successes += counts[base]
                    failures += counts[base + 1]
                    slow += counts[base + 2]
        return successes, failures, slow

    def failure_rate(self, now: float) -> float:
        successes, failures, _ = self.totals(now)
        total = successes + failures
        return failures / total if total else 0.0

    # -- the arrays (seconds before the latest) ----------------------------------------------

    def _store(self, second: int, successes: int, failures: int, slow: int) -> None:
        if self.stamps is None:
            self.ring = self.size <= SPARSE
            slots = self.size if self.ring else SPARSE
            self.stamps = array("i", [UNUSED]) * slots
            self.counts = array("B", bytes(3 * slots))
        base = 3 * self._slot(second)
        for offset, count in enumerate((successes, failures, slow)):
            if count:
                self._add(base + offset, count)

    def _slot(self, second: int) -> int:
        stamps, counts = self.stamps, self.counts
        assert stamps is not None and counts is not None
        if self.ring:
            index = second % self.size
        elif second in stamps:
            return stamps.index(second)
        else:
            oldest = min(stamps)  # the slot whose second is oldest, if it has left the window
            if oldest > second - self.size:
                self._grow(stamps, counts)
                return self._slot(second)
            index = stamps.index(oldest)
        if stamps[index] != second:
            try:
                stamps[index] = second
            except OverflowError:
                stamps = self.stamps = widened(stamps)
                stamps[index] = second
            base = 3 * index
            counts[base : base + 3] = array(counts.typecode, (0, 0, 0))
        return index

    def _grow(self, old_stamps: array[int], old_counts: array[int]) -> None:
        """Every sparse slot is live: become a ring with a slot for each second."""
        size = self.size
        stamps = array(old_stamps.typecode, [UNUSED]) * size
        counts = array(old_counts.typecode, (0, 0, 0)) * size
        for index, stamp in enumerate(old_stamps):
            target = stamp % size
            stamps[target] = stamp
            counts[3 * target : 3 * target + 3] = old_counts[3 * index : 3 * index + 3]
        self.stamps, self.counts, self.ring = stamps, counts, True

    def _add(self, position: int, count: int) -> None:
        counts = self.counts
        assert counts is not None
        try:
            counts[position] += count
        except OverflowError:
            while True:
                counts = self.counts = widened(counts)
                try:
                    counts[position] += count
                    return
                except OverflowError:
                    continue


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
