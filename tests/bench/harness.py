"""Fair measurement: paired, interleaved rounds, a settled collector, medians of per-round ratios.

A *round* measures each other contestant once, each immediately followed by a measurement of
the subject (breakerd): ``peer, breakerd, peer, breakerd, ...``.  The others' order rotates by
one place each round, so no one always runs first.  A comparison with a contestant uses the
subject's measurement taken right after it (its *pair*): on a machine shared with other work,
speed drifts within seconds, and two measurements milliseconds apart drift together.  The
subject's own figure in a round is the median of its measurements in that round.

Before each measurement the garbage collector runs until it finds nothing, so no contestant
pays for another's garbage.  It stays enabled while timing: allocation is part of the cost.

Ratios and differences are computed inside each round, and only then reduced to a median.
"""

from __future__ import annotations

import gc
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: One round of one metric: contestant name (and ``pair_key`` entries) -> raw measurement.
Round = dict[str, float]
#: What a measurement returns: one figure, or several metrics of the same run by name.
Measurement = float | Mapping[str, float]


@dataclass(frozen=True)
class Contestant:
    """Something to measure (lower is better)."""

    name: str
    measure: Callable[[], Measurement]


def pair_key(subject: str, other: str) -> str:
    """The round key of the subject's measurement taken right after ``other``'s."""
    return f"{subject}@{other}"


def settle() -> None:
    """Collect garbage until a pass finds none (at most five passes)."""
    for _ in range(5):
        if gc.collect() == 0:
            return


def run_rounds(
    subject: Contestant,
    others: Sequence[Contestant],
    rounds: int,
    label: str,
    *,
    warm_up: bool = True,
) -> list[Round]:
    """Paired, interleaved rounds of single-figure measurements (see the module docstring).

    With ``warm_up``, one discarded measurement per contestant comes first, so that first-use
    costs (imports, binding to the loop, specialising the bytecode) land in no round.
    """
    raw = _run(subject, others, rounds, label, warm_up)
    return [{key: _scalar(value) for key, value in one.items()} for one in raw]


def run_rounds_by_metric(
    subject: Contestant,
    others: Sequence[Contestant],
    rounds: int,
    label: str,
    metrics: Sequence[str],
) -> dict[str, list[Round]]:
    """:func:`run_rounds` for measurements that return several ``metrics`` (no warm-up)."""
    raw = _run(subject, others, rounds, label, False)
    return {
        metric: [{key: _metric(value, metric) for key, value in one.items()} for one in raw]
        for metric in metrics
    }


def _run(
    subject: Contestant, others: Sequence[Contestant], rounds: int, label: str, warm_up: bool
) -> list[dict[str, Measurement]]:
    if warm_up:
        for contestant in [*others, subject]:
            settle()
            contestant.measure()
    results: list[dict[str, Measurement]] = []
    for number in range(rounds):
        shift = number % len(others)
        current: dict[str, Measurement] = {}
        for other in [*others[shift:], *others[:shift]]:
            settle()
            current[other.name] = other.measure()
            settle()
            current[pair_key(subject.name, other.name)] = subject.measure()
        pairs = [current[pair_key(subject.name, other.name)] for other in others]
        current[subject.name] = _median_measurement(pairs)
        results.append(current)
        progress(f"{label}: round {number + 1}/{rounds}")
    return results


def _median_measurement(values: list[Measurement]) -> Measurement:
    first = values[0]
    if isinstance(first, Mapping):
        return {key: median([_metric(value, key) for value in values]) for key in first}
    return median([_scalar(value) for value in values])


def _scalar(value: Measurement) -> float:
    if isinstance(value, Mapping):
        raise TypeError(f"expected one figure, got several: {value!r}")
    return float(value)


def _metric(value: Measurement, metric: str) -> float:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected figures by metric, got one: {value!r}")
    return float(value[metric])


def progress(message: str) -> None:
    """A progress line on stderr (stdout stays clean)."""
    print(f"  {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; infinity when the denominator is not positive."""
    # A peer whose overhead vanishes into the noise (<= 0) cannot be beaten by a ratio.
    return numerator / denominator if denominator > 0 else float("inf")


#: Turns one round into the figure shown for a contestant (e.g. overhead in microseconds).
Figure = Callable[[Round, str], float]


def paired(one: Round, subject: str, other: str) -> Round:
    """``one`` with the subject's figure replaced by its measurement paired with ``other``."""
    return {**one, subject: one[pair_key(subject, other)]}


def versus(figure: Figure, subject: str, other: str) -> Callable[[Round], float]:
    """Per-round metric: the subject's figure / ``other``'s, from the pair."""
    return lambda one: ratio(figure(paired(one, subject, other), subject), figure(one, other))


def versus_best(figure: Figure, subject: str, others: Sequence[str]) -> Callable[[Round], float]:
    """Per-round metric: the subject's figure / the best (lowest) of ``others`` in that round,
    from the subject's measurement paired with that best one."""

    def metric(one: Round) -> float:
        best = min(others, key=lambda name: figure(one, name))
        return versus(figure, subject, best)(one)

    return metric


@dataclass(frozen=True)
class Check:
    """One condition of a bar: the median over rounds of ``metric(round)`` must be <= ``limit``."""

    label: str
    metric: Callable[[Round], float]
    limit: float


@dataclass
class Row:
    """One line of the table, JSON-ready through :meth:`to_json`."""

    key: str
    title: str
    unit: str
    figures: dict[str, float | None]
    best_peer_ratio: float | None
    bar: str
    checks: list[dict[str, Any]]
    passed: bool | None
    notes: dict[str, str] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "figures": self.figures,
            "best_peer_ratio": self.best_peer_ratio,
            "bar": self.bar,
            "checks": self.checks,
            "passed": self.passed,
            "notes": self.notes,
            "rounds": self.rounds,
            "extra": self.extra,
        }


def build_row(
    *,
    key: str,
    title: str,
    unit: str,
    rounds: list[Round],
    figure: Figure,
    subject: str,
    peers: Sequence[str],
    bar: str,
    checks: Sequence[Check],
    notes: Mapping[str, str],
    reference: str | None = None,
    shown: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Row:
    """Reduce ``rounds`` to a row.

    Each figure is the median over rounds of ``figure(round, name)``; the ratio to the best
    peer is :func:`versus_best` per round, then the median.  ``reference`` (e.g. the bare
    call) is shown in its own column when given; ``shown`` names further contestants whose
    figures the row carries.
    """
    names = [*([reference] if reference else []), *peers, *shown, subject]
    figures: dict[str, float | None] = {
        name: median([figure(one, name) for one in rounds]) for name in names
    }
    best_ratio: float | None = None
    if peers:
        best_ratio = median([versus_best(figure, subject, peers)(one) for one in rounds])
    results = []
    for check in checks:
        value = median([check.metric(one) for one in rounds])
        results.append(
            {
                "label": check.label,
                "value": value,
                "limit": check.limit,
                "passed": value <= check.limit,
            }
        )
    return Row(
        key=key,
        title=title,
        unit=unit,
        figures=figures,
        best_peer_ratio=best_ratio,
        bar=bar,
        checks=results,
        passed=all(result["passed"] for result in results) if results else None,
        notes=dict(notes),
        rounds=rounds,
        extra=dict(extra or {}),
    )
