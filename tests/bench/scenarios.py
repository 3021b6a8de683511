"""The issue's scenarios, row by row, grouped by the worker process that runs them.

Every row follows the same recipe: build each contestant's breaker and guarded call outside
the timing, then :func:`harness.run_rounds` measures them in interleaved rounds, then
:func:`harness.build_row` reduces the rounds to figures, a ratio to the best peer and the bar's
checks.  Figures are microseconds per call unless the row says otherwise; "overhead" is a
guarded call's time minus the bare call's time *in the same round*.

A peer missing from a row says why in the row's notes (``peers.Peer.unsupported``).
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import anyio

from tests.bench import cluster_hook, gateway, harness, telemetry_hook
from tests.bench.cluster_hook import ClusterSwitch
from tests.bench.harness import (
    Check,
    Contestant,
    Figure,
    Round,
    Row,
    build_row,
    run_rounds,
    run_rounds_by_metric,
    settle,
)
from tests.bench.loops import Call, Errors, Guarded, run_sync, time_async, time_sync, time_tasks
from tests.bench.peers import (
    ASYNC,
    OPEN_SECONDS,
    THREADS,
    THRESHOLD,
    Breakerd,
    BreakerdOwnConfig,
    Peer,
    all_peers,
    once_async,
    peer_named,
    trip_async,
    trip_sync,
)
from tests.bench.telemetry_hook import Switch

BARE = "no breaker"
BREAKERD = "breakerd"
WITHOUT = "breakerd, switched off"
US = 1e6
MB = 1 / (1024 * 1024)


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


class LeakedCall(Exception):
    """The guarded function ran although the breaker is open: the row would be a lie."""


# -- shared helpers --------------------------------------------------------------------------


def taking_part(peers: Sequence[Peer], capability: str | None) -> tuple[list[Peer], dict[str, str]]:
    """The peers able to run a scenario needing ``capability``, and notes for the others."""
    able = [p for p in peers if capability is None or capability not in p.unsupported]
    notes = {p.name: p.unsupported[capability] for p in peers if p not in able and capability}
    return able, notes


def overhead_us(one: Round, name: str) -> float:
    """A guarded call's time minus the bare call's, in the same round; for the bare column
    itself, the bare call's own time (the reference the overheads are taken from)."""
    if name == BARE:
        return one[BARE] * US
    return (one[name] - one[BARE]) * US


def per_call_us(one: Round, name: str) -> float:
    return one[name] * US


def raw(one: Round, name: str) -> float:
    return one[name]


def versus_best(figure: Figure, peers: Sequence[str]) -> Callable[[Round], float]:
    """Per-round metric: breakerd's figure / the best peer's, from their pair."""
    return harness.versus_best(figure, BREAKERD, peers)


def versus(figure: Figure, other: str) -> Callable[[Round], float]:
    """Per-round metric: breakerd's figure / ``other``'s, from their pair."""
    return harness.versus(figure, BREAKERD, other)


def timed_async(
    runner: asyncio.Runner,
    guarded: Guarded,
    calls: int,
    errors: Errors = (),
    after: Callable[[], None] | None = None,
) -> Callable[[], float]:
    """A measurement: seconds per call of ``calls`` awaited calls on ``runner``'s loop."""

    def measure() -> float:
        elapsed = runner.run(time_async(guarded, calls, errors))
        if after is not None:
            after()
        return elapsed / calls

    return measure


def timed_sync(
    peer: Peer | None, breaker: Any, guarded: Guarded, calls: int, errors: Errors = ()
) -> Callable[[], float]:
    """A measurement: seconds per call of ``calls`` calls on this thread, including what the
    breaker still owes when the loop ends (``Peer.finish_sync``)."""

    def measure() -> float:
        finish = peer.finish_sync(breaker, calls) if peer is not None else None
        elapsed = time_sync(guarded, calls, errors, finish)
        if peer is not None:
            peer.tidy(breaker)
        return elapsed / calls

    return measure


def after_for(peer: Peer, breaker: Any) -> Callable[[], None]:
    """What to run after each of ``peer``'s async measurements (untimed)."""
    if isinstance(peer, Breakerd):
        return lambda: Breakerd.assert_drained(breaker)
    return lambda: peer.tidy(breaker)


async def ok_async() -> None:
    return None


def ok_sync() -> None:
    return None


async def leaked_async() -> None:
    raise LeakedCall


def leaked_sync() -> None:
    raise LeakedCall


# -- row 1 and 4a: one task, async ---------------------------------------------------------


def async_success(
    settings: Settings,
    runner: asyncio.Runner,
    peers: list[Peer],
    *,
    key: str = "1",
    title: str = "async success call, closed, one task: overhead",
    breakerd: Breakerd | None = None,
) -> Row:
    calls = settings.size(50_000, 3_000)
    able, notes = taking_part(peers, ASYNC)

    def contestant(peer: Peer) -> Contestant:
        breaker = runner.run(peer.new_async(f"bench-{key}-{peer.name}"))
        guarded = peer.guard_async(breaker, ok_async)
        return Contestant(
            peer.name, timed_async(runner, guarded, calls, (), after_for(peer, breaker))
        )

    bare = Contestant(BARE, timed_async(runner, Call(ok_async), calls))
    others = [bare, *map(contestant, able)]
    subject = contestant(breakerd or Breakerd())
    rounds = run_rounds(subject, others, settings.rounds, f"{key} async success")
    names = [p.name for p in able]
    return build_row(
        key=key,
        title=title,
        unit="us/call",
        rounds=rounds,
        figure=overhead_us,
        subject=BREAKERD,
        peers=names,
        reference=BARE,
        bar="overhead <= 0.75 x fastest peer",
        checks=[Check("breakerd / fastest peer", versus_best(overhead_us, names), 0.75)],
        notes=notes,
        extra={"calls_per_measurement": calls},
    )


def rate_window(settings: Settings, runner: asyncio.Runner, peers: list[Peer]) -> Row:
    """Row 1r: row 1 with a time-based failure-rate window on (issue 7's bar: row 1's)."""
    from service.circuit_breaker import CircuitBreakerConfig

    config = CircuitBreakerConfig(
        failure_threshold=THRESHOLD,
        timeout_duration=float(OPEN_SECONDS),
        failure_rate_threshold=0.5,
        minimum_calls=10,
    )
    return async_success(
        settings,
        runner,
        peers,
        key="1r",
        title="row 1 with a time-based failure-rate window: overhead",
        breakerd=Breakerd(config),
    )


def async_rejection(settings: Settings, runner: asyncio.Runner, peers: list[Peer]) -> Row:
    calls = settings.size(50_000, 3_000)
    able, notes = taking_part(peers, ASYNC)

    def contestant(peer: Peer) -> Contestant:
        async def tripped() -> Any:
            breaker = await peer.new_async(f"bench-4a-{peer.name}")
            await trip_async(peer, breaker)
            return breaker

        breaker = runner.run(tripped())
        guarded = peer.guard_async(breaker, leaked_async)
        measure = timed_async(runner, guarded, calls, peer.open_errors, after_for(peer, breaker))
        return Contestant(peer.name, measure)

    others = [contestant(peer) for peer in able]
    rounds = run_rounds(contestant(Breakerd()), others, settings.rounds, "4a async rejection")
    names = [p.name for p in able]
    return build_row(
        key="4a",
        title="rejection in OPEN, async",
        unit="us/rejection",
        rounds=rounds,
        figure=per_call_us,
        subject=BREAKERD,
        peers=names,
        bar="<= 1.0 x fastest peer",
        checks=[Check("breakerd / fastest peer", versus_best(per_call_us, names), 1.0)],
        notes=notes,
        extra={"calls_per_measurement": calls},
    )


# -- row 2 and 4s: a plain thread, no event loop in it -------------------------------------


def sync_success(settings: Settings, peers: list[Peer]) -> Row:
    calls = settings.size(50_000, 3_000)

    def contestant(peer: Peer) -> Contestant:
        breaker = peer.new(f"bench-2-{peer.name}")
        guarded = peer.guard_sync(breaker, ok_sync)
        return Contestant(peer.name, timed_sync(peer, breaker, guarded, calls))

    bare = Contestant(BARE, timed_sync(None, None, Call(ok_sync), calls))
    others = [bare, *map(contestant, peers)]
    rounds = run_rounds(contestant(Breakerd()), others, settings.rounds, "2 sync success")
    names = [p.name for p in peers]
    return build_row(
        key="2",
        title="sync success call, plain thread, closed: overhead",
        unit="us/call",
        rounds=rounds,
        figure=overhead_us,
        subject=BREAKERD,
        peers=names,
        reference=BARE,
        bar="overhead <= 1.0 x fastest peer",
        checks=[Check("breakerd / fastest peer", versus_best(overhead_us, names), 1.0)],
        notes={},
        extra={"calls_per_measurement": calls},
    )


def sync_rejection(settings: Settings, peers: list[Peer]) -> Row:
    calls = settings.size(50_000, 3_000)

    def contestant(peer: Peer) -> Contestant:
        breaker = peer.new(f"bench-4s-{peer.name}")
        trip_sync(peer, breaker)
        guarded = peer.guard_sync(breaker, leaked_sync)
        return Contestant(peer.name, timed_sync(peer, breaker, guarded, calls, peer.open_errors))

    others = [contestant(peer) for peer in peers]
    rounds = run_rounds(contestant(Breakerd()), others, settings.rounds, "4s sync rejection")
    names = [p.name for p in peers]
    return build_row(
        key="4s",
        title="rejection in OPEN, sync",
        unit="us/rejection",
        rounds=rounds,
        figure=per_call_us,
        subject=BREAKERD,
        peers=names,
        bar="<= 1.0 x fastest peer",
        checks=[Check("breakerd / fastest peer", versus_best(per_call_us, names), 1.0)],
        notes={},
        extra={"calls_per_measurement": calls},
    )


# -- row 3: eight threads at once ----------------------------------------------------------

THREAD_COUNT = 8


def timed_threads(
    peer: Peer | None, breaker: Any, guarded: Guarded, calls: int
) -> Callable[[], float]:
    """A measurement: wall seconds per call while ``THREAD_COUNT`` threads make ``calls``
    calls each, from the moment all are released until all are done and the breaker has
    counted them."""

    def measure() -> float:
        finish = peer.finish_sync(breaker, calls * THREAD_COUNT) if peer is not None else None
        barrier = threading.Barrier(THREAD_COUNT + 1)
        failures: list[BaseException] = []

        def work() -> None:
            barrier.wait()
            try:
                run_sync(guarded, calls)
            except BaseException as exc:  # reported below: a thread must not fail silently
                failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(THREAD_COUNT)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = perf_counter()
        for thread in threads:
            thread.join()
        if finish is not None:
            finish()
        elapsed = perf_counter() - start
        if failures:
            raise failures[0]
        return elapsed / (calls * THREAD_COUNT)

    return measure


def threads_success(settings: Settings, peers: list[Peer]) -> Row:
    calls = settings.size(10_000, 1_000)
    able, notes = taking_part(peers, THREADS)

    def contestant(peer: Peer) -> Contestant:
        breaker = peer.new(f"bench-3-{peer.name}")
        guarded = peer.guard_sync(breaker, ok_sync)
        return Contestant(peer.name, timed_threads(peer, breaker, guarded, calls))

    bare = Contestant(BARE, timed_threads(None, None, Call(ok_sync), calls))
    others = [bare, *map(contestant, able)]
    rounds = run_rounds(contestant(Breakerd()), others, settings.rounds, "3 eight threads")
    names = [p.name for p in able]
    return build_row(
        key="3",
        title=f"sync success calls from {THREAD_COUNT} threads at once: time per call",
        unit="us/call",
        rounds=rounds,
        figure=per_call_us,
        subject=BREAKERD,
        peers=names,
        reference=BARE,
        bar="<= 0.5 x pybreaker",
        checks=[Check("breakerd / pybreaker", versus(per_call_us, "pybreaker"), 0.5)],
        notes=notes,
        extra={"threads": THREAD_COUNT, "calls_per_thread": calls},
    )


# -- row 5: memory per idle breaker --------------------------------------------------------


def bytes_per_breaker(peer: Peer, names: list[str]) -> Contestant:
    """Traced bytes per breaker that stay allocated while ``len(names)`` idle breakers are
    alive (names are built beforehand, so no one is charged for them)."""
    peer.new("bench-5-warm-up")  # first-use costs (imports, the default system) excluded

    def measure() -> float:
        peer.forget()
        holder: list[Any] = [None] * len(names)
        new = peer.new
        settle()
        before = tracemalloc.get_traced_memory()[0]
        for index, name in enumerate(names):
            holder[index] = new(name)
        settle()
        after = tracemalloc.get_traced_memory()[0]
        del holder
        peer.forget()
        return (after - before) / len(names)

    return Contestant(peer.name, measure)


def memory_idle(settings: Settings, peers: list[Peer]) -> Row:
    count = settings.size(10_000, 1_000)
    names = [f"bench-5-{index}" for index in range(count)]
    own = BreakerdOwnConfig()
    others = [bytes_per_breaker(peer, names) for peer in [*peers, own]]
    subject = bytes_per_breaker(Breakerd(), names)
    tracemalloc.start()
    try:
        rounds = run_rounds(subject, others, settings.rounds, "5 memory per idle breaker")
    finally:
        tracemalloc.stop()
    names_shown = [p.name for p in peers]
    return build_row(
        key="5",
        title=f"memory per idle breaker, {count:,} breakers (tracemalloc)",
        unit="bytes",
        rounds=rounds,
        figure=raw,
        subject=BREAKERD,
        peers=names_shown,
        shown=[own.name],
        bar="<= 1.0 x smallest peer, shared config and own config each",
        checks=[
            Check("breakerd / smallest peer", versus_best(raw, names_shown), 1.0),
            Check(
                "own config / smallest peer",
                lambda one: one[own.name] / min(one[name] for name in names_shown),
                1.0,
            ),
        ],
        notes={},
        extra={"breakers": count},
    )


# -- row 6: 10,000 tasks, each 20 calls that yield once --------------------------------------


async def yields_once() -> None:
    await anyio.sleep(0)


def many_tasks(settings: Settings, runner: asyncio.Runner, peers: list[Peer]) -> Row:
    tasks = settings.size(10_000, 300)
    calls = 20
    able, notes = taking_part(peers, ASYNC)

    def timed(name: str, guarded: Guarded, after: Callable[[], None] | None) -> Contestant:
        def measure() -> float:
            elapsed = runner.run(time_tasks(guarded, tasks, calls))
            if after is not None:
                after()
            return elapsed

        return Contestant(name, measure)

    def contestant(peer: Peer) -> Contestant:
        breaker = runner.run(peer.new_async(f"bench-6-{peer.name}"))
        return timed(peer.name, peer.guard_async(breaker, yields_once), after_for(peer, breaker))

    others = [timed(BARE, Call(yields_once), None), *map(contestant, able)]
    rounds = run_rounds(contestant(Breakerd()), others, settings.rounds, "6 many tasks")
    names = [p.name for p in able]

    def total_ms(one: Round, name: str) -> float:
        return one[name] * 1e3

    return build_row(
        key="6",
        title=f"{tasks:,} tasks x {calls} calls, each call yields once: total",
        unit="ms",
        rounds=rounds,
        figure=total_ms,
        subject=BREAKERD,
        peers=names,
        reference=BARE,
        bar="<= 1.15 x no breaker",
        checks=[Check("breakerd / no breaker", versus(total_ms, BARE), 1.15)],
        notes=notes,
        extra={"tasks": tasks, "calls_per_task": calls},
    )


# -- row 7: 100,000 breakers registered, then one call each -----------------------------------
#
# Each run happens in a fresh process (``python -m tests.bench --registry-child PEER``): the
# time is measured without tracemalloc slowing every allocation down, the peak memory is the
# growth of the process's peak RSS during the run, and no run inherits another's heap.


async def register_and_call(
    get: Callable[[str], Awaitable[Any]],
    guard: Callable[[Any, Callable[[], Awaitable[Any]]], Guarded],
    names: list[str],
) -> tuple[float, list[Any]]:
    """Seconds to look up (creating) every name, then make one call through each breaker."""
    start = perf_counter()
    breakers = [await get(name) for name in names]
    for breaker in breakers:
        await once_async(guard(breaker, ok_async))
    await asyncio.sleep(0)  # breakerd: every actor's drain runs here, inside the timing
    return perf_counter() - start, breakers


async def registry_run(peer: Peer, names: list[str]) -> float:
    """One row-7 run for ``peer`` on a fresh registry; returns seconds."""
    if not isinstance(peer, Breakerd):
        elapsed, _ = await register_and_call(peer.registry_async(), peer.guard_async, names)
        return elapsed
    async with peer.system() as system:

        async def get(name: str) -> Any:
            return system.breaker(name, peer.config)

        elapsed, breakers = await register_and_call(get, peer.guard_async, names)
        for breaker in breakers:
            Breakerd.assert_drained(breaker)
    return elapsed


def registry_child(name: str, count: int) -> dict[str, float]:
    """In a fresh process: one row-7 run; its seconds and its peak RSS growth in bytes."""
    peer = peer_named(name)
    names = [f"bench-7-{index}" for index in range(count)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = asyncio.run(registry_run(peer, names))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "bytes": float(after - before) * 1024}  # ru_maxrss is in KiB


def in_child(name: str, count: int) -> Contestant:
    def measure() -> dict[str, float]:
        command = [sys.executable, "-m", "tests.bench", "--registry-child", name]
        done = subprocess.run(
            [*command, "--count", str(count)], check=True, capture_output=True, text=True
        )
        result: dict[str, float] = json.loads(done.stdout)
        return result

    return Contestant(name, measure)


def many_breakers(settings: Settings, peers: list[Peer]) -> list[Row]:
    count = settings.size(100_000, 5_000)
    able, notes = taking_part(peers, ASYNC)
    by_metric = run_rounds_by_metric(
        in_child(BREAKERD, count),
        [in_child(peer.name, count) for peer in able],
        settings.rounds,
        "7 registry",
        ["seconds", "bytes"],
    )
    names = [p.name for p in able]
    shown = {
        "seconds": ("time", "s", 1.0, 1.5),
        "bytes": ("peak RSS growth", "MB", MB, 2.0),
    }
    rows = []
    for metric, (label, unit, scale, limit) in shown.items():

        def figure(one: Round, name: str, scale: float = scale) -> float:
            return one[name] * scale

        row = build_row(
            key="7t" if metric == "seconds" else "7m",
            title=f"{count:,} breakers registered, then one call each: {label}",
            unit=unit,
            rounds=by_metric[metric],
            figure=figure,
            subject=BREAKERD,
            peers=names,
            bar=f"<= {limit} x best peer",
            checks=[Check("breakerd / best peer", versus_best(figure, names), limit)],
            notes=notes,
            extra={"breakers": count},
        )
        rows.append(row)
    return rows


# -- row 8: monitor operations over 100,000 breakers -----------------------------------------
#
# breakerd alone (the peers have no monitor).  The breakers are registered and called once each,
# as in row 7; then each round times every operation once, in one process and on the system's
# own loop (the sync methods answer inline there).  Figures are microseconds per breaker; the
# bar is on the whole operation's seconds.

MONITOR_OPERATIONS = (
    ("8h", "get_health_summary"),
    ("8p", "get_performance_metrics"),
    ("8r", "reset_all_circuit_breakers"),
)
MONITOR_LIMIT_S = 0.5


def covered(result: dict[str, Any]) -> int:
    """How many breakers a monitor operation's result speaks of."""
    inner = result.get("circuit_breakers")
    return len(inner) if isinstance(inner, dict) else len(result)


async def monitor_rounds(count: int, rounds: int) -> dict[str, list[Round]]:
    from service.circuit_breaker import ActorSystem
    from service.monitor import CircuitBreakerMonitor

    peer = Breakerd()
    names = [f"bench-8-{index}" for index in range(count)]
    timings: dict[str, list[Round]] = {name: [] for _, name in MONITOR_OPERATIONS}
    async with ActorSystem() as system:
        breakers = [system.breaker(name, peer.config) for name in names]
        for breaker in breakers:
            await once_async(peer.guard_async(breaker, ok_async))
        await asyncio.sleep(0)
        monitor = CircuitBreakerMonitor(system)
        for _ in range(rounds + 1):  # the first is a warm-up
            for _, operation in MONITOR_OPERATIONS:
                run = getattr(monitor, operation)
                settle()
                start = perf_counter()
                result = run()
                elapsed = perf_counter() - start
                if covered(result) != count:
                    raise RuntimeError(f"{operation} covered {covered(result)} of {count}")
                timings[operation].append({BREAKERD: elapsed})
        monitor.close()
    return {operation: rounds_[1:] for operation, rounds_ in timings.items()}


def monitor_operations(settings: Settings) -> list[Row]:
    count = settings.size(100_000, 5_000)
    timings = asyncio.run(monitor_rounds(count, settings.rounds))
    rows = []
    for key, operation in MONITOR_OPERATIONS:

        def per_breaker_us(one: Round, name: str) -> float:
            return one[name] * US / count

        rows.append(
            build_row(
                key=key,
                title=f"{operation}() over {count:,} breakers: time per breaker",
                unit="us",
                rounds=timings[operation],
                figure=per_breaker_us,
                subject=BREAKERD,
                peers=[],
                bar=f"< {MONITOR_LIMIT_S} s in all",
                checks=[Check("breakerd seconds", lambda one: one[BREAKERD], MONITOR_LIMIT_S)],
                notes={},
                extra={"breakers": count},
            )
        )
    return rows


# -- rows 1t and 1c: row 1 with telemetry, with cluster mode ----------------------------------


def added_cost(
    settings: Settings,
    runner: asyncio.Runner,
    *,
    key: str,
    title: str,
    switch: Switch | ClusterSwitch | None,
    missing: str,
    where: str,
    registered: bool = False,
) -> Row:
    """Row 1 for one breakerd breaker, measured with ``switch`` off and on in every round; the
    bar is at most 0.3 us per call more with it on."""
    calls = settings.size(50_000, 3_000)
    bar = "<= +0.3 us/call vs without"
    if switch is None:
        return Row(
            key=key,
            title=title,
            unit="us/call",
            figures={},
            best_peer_ratio=None,
            bar=bar,
            checks=[],
            passed=None,
            notes={BREAKERD: "not available: " + missing},
        )
    breakerd = Breakerd()
    name = f"bench-{key}"
    breaker = runner.run(
        breakerd.registered_async(name) if registered else breakerd.new_async(name)
    )
    measure = timed_async(
        runner, breakerd.guard_async(breaker, ok_async), calls, (), after_for(breakerd, breaker)
    )
    others = [
        Contestant(BARE, timed_async(runner, Call(ok_async), calls)),
        Contestant(WITHOUT, measure),
    ]
    subject = Contestant(BREAKERD, switch.around(runner, measure))
    rounds = run_rounds(subject, others, settings.rounds, f"{key} {title}")

    def added(one: Round) -> float:
        switched_on = harness.paired(one, BREAKERD, WITHOUT)
        return overhead_us(switched_on, BREAKERD) - overhead_us(one, WITHOUT)

    return build_row(
        key=key,
        title=title,
        unit="us/call",
        rounds=rounds,
        figure=overhead_us,
        subject=BREAKERD,
        peers=[],
        reference=BARE,
        bar=bar,
        checks=[Check("with - without (us/call)", added, 0.3)],
        notes={WITHOUT: "breakerd's figure in the same rounds with it off"},
        extra={"calls_per_measurement": calls, "switch": where},
        shown=[WITHOUT],
    )


def telemetry_on(settings: Settings, runner: asyncio.Runner) -> Row:
    return added_cost(
        settings,
        runner,
        key="1t",
        title="row 1 with telemetry on (in-memory exporter): overhead",
        switch=telemetry_hook.find(),
        missing=telemetry_hook.MISSING,
        where=telemetry_hook.WHERE,
    )


def cluster_on(settings: Settings, runner: asyncio.Runner) -> Row:
    return added_cost(
        settings,
        runner,
        key="1c",
        title="row 1 with cluster mode on (Redis on 127.0.0.1:6379): overhead",
        switch=cluster_hook.find(runner),
        missing=cluster_hook.MISSING,
        where=cluster_hook.WHERE,
        registered=True,  # only named breakers join a cluster
    )


# -- the groups: one worker process each --------------------------------------------------


def group_async(settings: Settings) -> list[Row]:
    with asyncio.Runner() as runner:
        peers = all_peers()
        return [async_success(settings, runner, peers), async_rejection(settings, runner, peers)]


def group_policies(settings: Settings) -> list[Row]:
    with asyncio.Runner() as runner:
        return [rate_window(settings, runner, all_peers())]


def group_cluster(settings: Settings) -> list[Row]:
    with asyncio.Runner() as runner:
        return [cluster_on(settings, runner)]


def group_sync(settings: Settings) -> list[Row]:
    peers = all_peers()
    return [sync_success(settings, peers), sync_rejection(settings, peers)]


def group_threads(settings: Settings) -> list[Row]:
    return [threads_success(settings, all_peers())]


def group_memory(settings: Settings) -> list[Row]:
    return [memory_idle(settings, all_peers())]


def group_tasks(settings: Settings) -> list[Row]:
    with asyncio.Runner() as runner:
        return [many_tasks(settings, runner, all_peers())]


def group_registry(settings: Settings) -> list[Row]:
    return many_breakers(settings, all_peers())


def group_monitor(settings: Settings) -> list[Row]:
    return monitor_operations(settings)


def group_telemetry(settings: Settings) -> list[Row]:
    with asyncio.Runner() as runner:
        return [telemetry_on(settings, runner)]


GROUPS: dict[str, Callable[[Settings], list[Row]]] = {
    "async": group_async,
    "sync": group_sync,
    "threads": group_threads,
    "memory": group_memory,
    "tasks": group_tasks,
    "registry": group_registry,
    "monitor": group_monitor,
    "telemetry": group_telemetry,
    "policies": group_policies,
    "cluster": group_cluster,
    "gateway": gateway.group_gateway,
}

#: The table's row order.
ROW_ORDER = ["1", "1t", "1r", "1c", "2", "3", "4a", "4s", "5", "6", "7t", "7m", "8h", "8p", "8r"]
ROW_ORDER += gateway.ROWS
