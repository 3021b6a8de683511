"""Three replica processes, each with its own actor system and Redis link, and a breaker of the
same name: they act as one."""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.service.cluster import replica
from tests.service.cluster.helpers import MAIN_URL, delete_namespace, keys_without_ttl

REPLICAS = 3
ROUNDS = 20


class Replicas:
    """The test's side of the replica processes: commands out, reports in."""

    def __init__(self, namespace: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.namespace = namespace
        self.reports: Any = context.Queue()
        self.commands: list[Any] = [context.Queue() for _ in range(REPLICAS)]
        self.states: list[tuple[int, str, str, str, float]] = []  # index, breaker, state, why, at
        self.done: list[tuple[int, Any]] = []
        self.processes = [
            context.Process(
                target=replica.main,
                args=(index, MAIN_URL, namespace, self.commands[index], self.reports),
                name=f"replica-{index}",
                daemon=True,
            )
            for index in range(REPLICAS)
        ]
        self.ready: set[int] = set()

    def start(self) -> None:
        for process in self.processes:
            process.start()
        self.wait(lambda: len(self.ready) == REPLICAS, 60, "replicas ready")

    def send(self, index: int, *command: Any) -> None:
        self.commands[index].put(command)

    def run(self, index: int, *command: Any, timeout: float = 20) -> Any:
        """Send a command and wait for its end; returns its result."""
        mark = len([d for d in self.done if d[0] == index])
        self.send(index, *command)
        self.wait(lambda: len([d for d in self.done if d[0] == index]) > mark, timeout, command)
        return [d for d in self.done if d[0] == index][-1][1]

    def wait(self, condition: Callable[[], bool], timeout: float, what: object) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not within {timeout}s: {what}")
            try:
                report = self.reports.get(timeout=remaining)
            except queue.Empty:
                continue
            kind, index, *rest = report
            if kind == "ready":
                self.ready.add(index)
            elif kind == "state":
                self.states.append((index, *rest))
            else:
                self.done.append((index, rest[0]))

    def first(self, since: int, breaker: str, state: str) -> dict[int, tuple[str, float]]:
        """Per replica, (reason, at) of its first change of ``breaker`` to ``state`` among the
        changes reported after the first ``since``."""
        found: dict[int, tuple[str, float]] = {}
        for index, name, to_state, reason, at in self.states[since:]:
            if name == breaker and to_state == state and index not in found:
                found[index] = (reason, at)
        return found

    def stop(self) -> None:
        for index, process in enumerate(self.processes):
            if process.is_alive():
                self.send(index, "stop")
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for channel in (self.reports, *self.commands):
            channel.close()
            channel.join_thread()


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    namespace = f"breakerd-test-{uuid.uuid4().hex[:12]}"
    group = Replicas(namespace)
    try:
        group.start()
        yield group
    finally:
        group.stop()
        with redis.Redis.from_url(MAIN_URL) as client:
            delete_namespace(client, namespace)


def test_failures_seen_by_one_replica_open_the_breaker_in_all(
    replicas: Replicas, capsys: pytest.CaptureFixture[str]
) -> None:
    delays: list[float] = []
    for round_ in range(ROUNDS):
        origin = round_ % REPLICAS
        mark = len(replicas.states)
        replicas.run(origin, "fail", "prop", 3)  # a failure is an ask: OPEN here by its end
        replicas.wait(
            lambda: len(replicas.first(mark, "prop", "open")) == REPLICAS,  # noqa: B023
            10,
            f"round {round_}: every replica OPEN",
        )
        opened = replicas.first(mark, "prop", "open")
        assert opened[origin][0] == "failure_threshold"
        for index, (reason, at) in opened.items():
            if index != origin:
                assert reason == "cluster"
                delays.append(at - opened[origin][1])
        replicas.run(origin, "reset", "prop")
        replicas.wait(
            lambda: len(replicas.first(mark, "prop", "closed")) == REPLICAS,  # noqa: B023
            10,
            f"round {round_}: every replica CLOSED again",
        )
    cuts = statistics.quantiles(delays, n=20)
    with capsys.disabled():
        print(
            f"\ncluster propagation to {REPLICAS - 1} other replicas, {ROUNDS} rounds, "
            f"{len(delays)} samples: p50 {cuts[9] * 1000:.1f} ms, p95 {cuts[18] * 1000:.1f} ms, "
            f"max {max(delays) * 1000:.1f} ms"
        )


def test_exactly_one_replica_probes_when_the_break_ends(replicas: Replicas) -> None:
    counter = f"{replicas.namespace}:test:probes"
    mark = len(replicas.states)
    replicas.run(0, "fail", "probe", 3)
    replicas.wait(
        lambda: len(replicas.first(mark, "probe", "open")) == REPLICAS, 10, "every replica OPEN"
    )
    done = len(replicas.done)
    for index in range(REPLICAS):
        replicas.send(index, "race", "probe", counter)
    replicas.wait(lambda: len(replicas.done) == done + REPLICAS, 30, "every replica raced")
    reached = {index: result for index, result in replicas.done[done:]}
    assert sum(reached.values()) == 1, reached
    with redis.Redis.from_url(MAIN_URL) as client:
        assert int(client.get(counter) or 0) == 1
    half_open = replicas.first(mark, "probe", "half_open")
    assert len(half_open) == 1, half_open
    (holder,) = half_open
    assert reached[holder] == 1


def test_every_key_the_replicas_wrote_expires(replicas: Replicas) -> None:
    replicas.run(1, "fail", "prop", 3)
    with redis.Redis.from_url(MAIN_URL, decode_responses=True) as client:
        keys = list(client.scan_iter(match=f"{replicas.namespace}:*"))
        assert f"{replicas.namespace}:state:prop" in keys
        assert keys_without_ttl(client, replicas.namespace) == []
    stats = [replicas.run(index, "statistics", "prop") for index in range(REPLICAS)]
    assert all(item["status"] == "connected" for item in stats)
    assert all(item["disconnects"] == 0 for item in stats)
