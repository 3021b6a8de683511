"""The probe lease: one replica probes for the cluster when a break ends.

The holder goes HALF_OPEN (published, so the others keep rejecting for the lease's time) and
renews the lease while it probes; its verdict is published like any transition and releases
the lease in the same script (``scripts.PUBLISH``).  When Redis cannot answer, the lease is
granted locally: breakers then decide alone rather than wait."""

from __future__ import annotations

import logging

import anyio
import redis.asyncio as aioredis

from actors.messages import ProbeLeaseDecided
from actors.system import ActorSystem
from service.cluster.keys import Keys
from service.cluster.scripts import Scripts, ms

logger = logging.getLogger("service.cluster")


class ProbeLeases:
    """One replica's side of the probe leases: races for them, renews those it holds."""

    __slots__ = ("_counters", "_keys", "_lease_ttl", "_operation_timeout", "_replica_id", "probing")

    def __init__(
        self,
        keys: Keys,
        replica_id: str,
        lease_ttl: float,
        operation_timeout: float,
        counters: dict[str, int],
    ) -> None:
        self._keys = keys
        self._replica_id = replica_id
        self._lease_ttl = lease_ttl
        self._operation_timeout = operation_timeout
        self._counters = counters
        self.probing: set[str] = set()  # breakers this replica probes for (lease held)

    async def race(
        self, scripts: Scripts | None, system: ActorSystem, breaker: str, generation: int
    ) -> None:
        """Runs as its own task, so that a slow Redis delays no one but this breaker's
        probe, and only up to ``operation_timeout``; any trouble grants the lease locally."""
        try:
            if scripts is None:
                raise ConnectionError("not connected")
            with anyio.fail_after(self._operation_timeout):
                granted, left = await scripts.acquire(
                    keys=[self._keys.lease(breaker)],
                    args=[self._replica_id, ms(self._lease_ttl)],
                )
        except Exception as exc:
            logger.info("probe lease for %r decided locally: %r", breaker, exc)
            self.grant_locally(system, breaker, generation)
            return
        if int(granted):
            self._counters["leases_granted"] += 1
            system.post(breaker, ProbeLeaseDecided(generation=generation, granted=True))
        else:
            self._counters["leases_refused"] += 1
            # PTTL is negative if the lease just expired; a lease with more time left than
            # any holder could have set is garbage (the next acquire replaces a foreign type).
            retry_in = min(max(int(left), 50) / 1000, self._lease_ttl)
            system.post(
                breaker,
                ProbeLeaseDecided(generation=generation, granted=False, retry_in=retry_in),
            )

    def grant_locally(self, system: ActorSystem, breaker: str, generation: int) -> None:
        self._counters["leases_local"] += 1
        system.post(breaker, ProbeLeaseDecided(generation=generation, granted=True))

    async def renew(self, client: aioredis.Redis, scripts: Scripts) -> None:
        """Extend the leases this replica holds (one pipelined round trip)."""
        async with client.pipeline(transaction=False) as pipe:
            for name in self.probing:
                await scripts.renew(
                    keys=[self._keys.lease(name)],
                    args=[self._replica_id, ms(self._lease_ttl)],
                    client=pipe,
                )
            await pipe.execute()
