"""Row 1c's hook: row 1 with cluster mode on, against the Redis on 127.0.0.1:6379.

The switch attaches a ``RedisCluster`` link (a namespace of its own) to the process-wide actor
system before a measurement, waits until it is connected, and detaches it afterwards (all
untimed, on the measuring loop), so that the same registered breaker is measured with and
without cluster mode in every round.  Without a reachable Redis the row is reported as "not
available" and does not fail the run.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable

MISSING = "no Redis listening on 127.0.0.1:6379"
WHERE = "service.cluster.RedisCluster on redis://127.0.0.1:6379/0"
URL = "redis://127.0.0.1:6379/0"


class ClusterSwitch:
    """Turns cluster mode on for the length of one measurement."""

    def __init__(self) -> None:
        self.namespace = f"breakerd-bench-{uuid.uuid4().hex}"

    def around(self, runner: asyncio.Runner, measure: Callable[[], float]) -> Callable[[], float]:
        from actors.system import default_system
        from service.cluster import RedisCluster

        async def attach() -> None:
            link = RedisCluster(url=URL, namespace=self.namespace)
            default_system().attach_cluster(link)
            deadline = time.monotonic() + 10.0
            while link.status != "connected":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster link never connected: {link.statistics()}")
                await asyncio.sleep(0.01)

        async def detach() -> None:
            default_system().detach_cluster()
            await asyncio.sleep(0)  # let the link's task see its cancellation

        def measured() -> float:
            runner.run(attach())
            try:
                return measure()
            finally:
                runner.run(detach())

        return measured


def find(runner: asyncio.Runner) -> ClusterSwitch | None:
    """The cluster switch, or None without a Redis to talk to."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1.0):
            pass
    except OSError:
        return None
    return ClusterSwitch()
