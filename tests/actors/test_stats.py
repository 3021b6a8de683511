"""The compact counters: same answers as a plain model, whatever the sizes and the clock."""

from __future__ import annotations

import random

import pytest

from actors.stats import DURATION_BOUNDS, FEW, SPARSE, DurationHistogram, RateWindow


class PlainWindow:
    """The rule, spelled out: a dict of per-second counts, summed over the window."""

    def __init__(self, seconds: float) -> None:
        self.size = max(1, -int(-seconds // 1))
        self.seconds: dict[int, list[int]] = {}

    def add(self, now: float, successes: int, failures: int, slow: int) -> None:
        counts = self.seconds.setdefault(int(now), [0, 0, 0])
        counts[0] += successes
        counts[1] += failures
        counts[2] += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        oldest = int(now) - self.size
        live = [counts for second, counts in self.seconds.items() if second > oldest]
        return (
            sum(c[0] for c in live),
            sum(c[1] for c in live),
            sum(c[2] for c in live),
        )


@pytest.mark.parametrize("seconds", [1, 2.5, SPARSE, SPARSE + 1, 60])
@pytest.mark.parametrize("start", [0.0, 7.5, 3e9])
def test_the_rate_window_agrees_with_a_plain_model(seconds: float, start: float) -> None:
    rng = random.Random(f"{seconds}-{start}")
    window, model = RateWindow(seconds), PlainWindow(seconds)
    now = start
    for _ in range(300):
        now += rng.choice([0.0, 0.3, 1.0, 2.0, 7.0, 70.0])
        most = rng.choice([0, 1, 3, 300, 70_000])
        outcomes = rng.randint(0, most), rng.randint(0, most), rng.randint(0, most)
        window.add(now, *outcomes)
        model.add(now, *outcomes)
        assert window.totals(now) == model.totals(now)


def test_a_breaker_with_few_calls_keeps_a_few_bytes_of_counts() -> None:
    window = RateWindow(60)
    window.add(10.0, 1, 0)
    assert window.stamps is None  # one second so far: no arrays
    window.add(11.0, 1, 0)
    assert window.stamps is not None and window.counts is not None
    assert len(window.stamps) == SPARSE and window.counts.itemsize == 1
    for second in range(12, 12 + SPARSE):
        window.add(float(second), 1, 1)
    assert len(window.stamps) == 60  # more live seconds than the sparse slots: a ring
    assert window.totals(15.0) == (SPARSE + 2, SPARSE, 0)


def test_counts_widen_instead_of_overflowing() -> None:
    histogram = DurationHistogram()
    assert histogram.counts.itemsize == 1
    for _ in range(300):
        histogram.record(0.001)
    histogram.record_run([0.002] * 100_000)
    assert histogram.counts.itemsize >= 4
    assert sum(histogram.counts) == histogram.count == 100_300
    window = RateWindow(3)
    window.add(5.0, 2**40, 0)
    window.add(6.0, 0, 1)  # second 5 moves to the arrays, which widen to hold it
    assert window.totals(6.0) == (2**40, 1, 0)


def walked_percentile(counts: list[int], q: float) -> float | None:
    """The rule, spelled out: walk the buckets until the rank is reached."""
    total = sum(counts)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for index, bucket in enumerate(counts):
        if bucket and seen + bucket >= rank:
            lower = DURATION_BOUNDS[index - 1] if index > 0 else 0.0
            upper = DURATION_BOUNDS[index] if index < len(DURATION_BOUNDS) else lower
            return lower + (upper - lower) * max(0.0, rank - seen) / bucket
        seen += bucket
    return DURATION_BOUNDS[-1]


@pytest.mark.parametrize("recorded", [1, 3, FEW, FEW + 1, 500])
def test_percentiles_agree_with_a_walk_of_the_buckets_sparse_or_dense(recorded: int) -> None:
    rng = random.Random(recorded)
    histogram = DurationHistogram()
    for _ in range(recorded):
        histogram.record(rng.choice([0.0, 1e-6, 0.003, 0.2, 500.0]) * rng.random())
    assert (histogram.dense is None) == (recorded <= FEW)  # sparse until FEW + 1
    answers = {q: histogram.percentile(q) for q in (0.0, 0.01, 0.5, 0.95, 0.99, 1.0)}
    assert (histogram.dense is None) == (recorded <= FEW)  # reading made no counts
    counts = list(histogram.counts)
    for q, answer in answers.items():
        assert answer == pytest.approx(walked_percentile(counts, q))


@pytest.mark.parametrize("seed", range(20))
def test_the_journal_holds_exactly_what_was_recorded_since_it_began(seed: int) -> None:
    """A drain's report is built from the histogram's journal: it must equal the difference
    of the counts, for single durations and for runs short and long (sampled)."""
    rng = random.Random(seed)
    histogram = DurationHistogram()
    for _ in range(rng.randrange(0, 20)):  # history before the journal: sparse or dense
        histogram.record(rng.uniform(0, 2))
    if rng.random() < 0.5:
        histogram.counts  # noqa: B018 (made dense now; else it may stay sparse)
    before = [0] * (len(DURATION_BOUNDS) + 1)
    if histogram.dense is None:
        for index in histogram.few:
            before[index] += 1
    else:
        before = list(histogram.dense)
    histogram.journal = []
    for _ in range(rng.randrange(1, 6)):
        if rng.random() < 0.5:
            histogram.record(10 ** rng.uniform(-6, 2))
        else:
            size = rng.choice([1, 2, 63, 64, 65, 200, 1000])
            histogram.record_run([10 ** rng.uniform(-6, 2) for _ in range(size)])
    journal, histogram.journal = histogram.journal, None
    from_journal = [0] * (len(DURATION_BOUNDS) + 1)
    for position in range(0, len(journal), 2):
        from_journal[journal[position]] += journal[position + 1]
    after = list(histogram.counts)
    assert [a - b for a, b in zip(after, before, strict=True)] == from_journal
    kept = list(journal)
    histogram.record(0.5)  # journaling stopped: nothing more is written to it
    assert journal == kept
