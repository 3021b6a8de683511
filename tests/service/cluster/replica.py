"""One replica for the multi-process cluster tests (started with the 'spawn' context).

Each replica runs its own actor system with its own Redis link and the same named breakers,
takes commands from its queue, and reports every state change (with its epoch time) and the
end of every command on the shared report queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import anyio.to_thread
import redis.asyncio as aioredis

from actors.breaker import Breaker
from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import CircuitBreakerOpenError
from actors.events import Event, StateChanged
from actors.system import ActorSystem
from service.cluster import RedisCluster

CONFIGS = {
    # Propagation rounds: a long break, closed again by a reset.
    "prop": CircuitBreakerConfig(failure_threshold=3, timeout_duration=30.0),
    # The probe race: a short break, one probe, and a failed probe backs off to 30 s.
    "probe": CircuitBreakerConfig(
        failure_threshold=3,
        timeout_duration=1.0,
        success_threshold=1,
        half_open_max_calls=1,
        backoff_multiplier=30.0,
        max_timeout_duration=60.0,
    ),
}

# After the failed probe, every replica's break is this long or longer.
BACKED_OFF = 10.0


class Down(RuntimeError):
    pass


def main(index: int, url: str, namespace: str, commands: Any, reports: Any) -> None:
    asyncio.run(_serve(index, url, namespace, commands, reports))


async def _serve(index: int, url: str, namespace: str, commands: Any, reports: Any) -> None:
    cluster = RedisCluster(url, namespace=namespace, replica_id=f"replica-{index}")
    counter = aioredis.Redis.from_url(url)
    try:
        async with ActorSystem(cluster=cluster, name=f"replica-{index}") as system:
            breakers = {name: system.breaker(name, config) for name, config in CONFIGS.items()}

            async def report(event: Event) -> None:
                assert isinstance(event, StateChanged)
                reports.put(
                    ("state", index, event.breaker, event.to_state.value, event.reason, event.at)
                )

            system.bus.subscribe(report, events=(StateChanged,))
            with anyio.fail_after(20):
                while cluster.status != "connected":
                    await anyio.sleep(0.01)
            reports.put(("ready", index, None))
            while True:
                command = await anyio.to_thread.run_sync(commands.get)
                if command[0] == "stop":
                    break
                result = await _run(command, breakers, counter, cluster)
                reports.put(("done", index, result))
    finally:
        await counter.aclose()


async def _run(
    command: tuple[Any, ...],
    breakers: dict[str, Breaker],
    counter: aioredis.Redis,
    cluster: RedisCluster,
) -> Any:
    kind, name, *rest = command
    breaker = breakers[name]
    if kind == "fail":
        for _ in range(rest[0]):
            with contextlib.suppress(Down, CircuitBreakerOpenError):
                await breaker.call_async(_down)
        return None
    if kind == "reset":
        await breaker.reset_async()
        return None
    if kind == "race":
        return await _race(breaker, counter, rest[0])
    if kind == "statistics":
        return cluster.statistics()
    raise ValueError(f"unknown command {command!r}")


async def _down() -> None:
    raise Down("upstream down")


async def _race(breaker: Breaker, counter: aioredis.Redis, key: str) -> int:
    """Call through ``breaker`` every few ms until its break has been backed off (the probe,
    wherever it ran, failed); every call that reaches the upstream counts in ``key``.
    Returns how many reached it from here."""
    reached = 0

    async def probe() -> None:
        nonlocal reached
        reached += 1
        async with counter.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 60)
            await pipe.execute()
        raise Down("still down")

    with anyio.fail_after(15):
        while True:
            with contextlib.suppress(Down, CircuitBreakerOpenError):
                await breaker.call_async(probe)
            snapshot = await breaker.metrics_async()
            if (
                snapshot.state is CircuitState.OPEN
                and snapshot.retry_after is not None
                and snapshot.retry_after > BACKED_OFF
            ):
                return reached
            await anyio.sleep(0.005)  # the pace of the callers, not a wait for a condition
