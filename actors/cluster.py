"""Cluster mode, as seen from the actors: what a cluster link must do, and nothing about how.

A *cluster link* (for example ``service.cluster.RedisCluster``) makes the breakers of one name
in many processes act as one.  The actor layer knows only this protocol, so it never imports a
cluster backend, and a system without a link behaves exactly as before.

What flows where:

- Local transitions reach the link as ``StateChanged`` events on the bus (the link subscribes).
  Transitions that the link itself caused carry ``reason="cluster"`` and are not sent back.
- The link tells a breaker about remote news with :class:`~actors.messages.ApplyRemoteState`,
  and (when counting for the whole cluster) :class:`~actors.messages.ClusterCounts`, through
  :meth:`actors.system.ActorSystem.post`; :class:`~actors.messages.UseLocalCounts` when the
  cluster's counts are no longer known, so that rate policies go back to this replica's own.
- A named breaker created while the link runs is announced with
  :meth:`ClusterLink.breaker_joined`.  Only named (registered) breakers join a cluster: the
  link reaches breakers by name.
- When a clustered breaker's break ends, it does not go HALF_OPEN by itself: it calls
  :meth:`ClusterLink.request_probe` and waits (still rejecting) for
  :class:`~actors.messages.ProbeLeaseDecided`, so that one replica probes for all of them.
  A link that cannot reach its backend must grant the lease: breakers then decide locally.

Nothing here is on the hot path: a clustered breaker's calls cost what they cost before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from actors.system import ActorSystem


class ClusterLink(Protocol):
    def attached(self, system: ActorSystem) -> None:
        """The link now serves ``system`` (the system's thread, before ``run`` starts; must
        not block).  Listen to the bus from here: a breaker may change before ``run``'s task
        first runs, and that change must be published once the link is up."""
        ...

    async def run(self, system: ActorSystem) -> None:
        """Keep the link up until cancelled; runs as a task of ``system``'s task group."""
        ...

    def request_probe(self, breaker: str, generation: int) -> None:
        """Ask, without blocking, whether this replica may probe ``breaker`` now.

        Called on the actor's thread.  Answer later, from any thread, by posting
        ``ProbeLeaseDecided(generation=generation, granted=...)`` to the breaker.
        """
        ...

    def breaker_joined(self, breaker: str) -> None:
        """A named breaker was created after the link started (any thread; must not block).

        The link fetches the cluster's news about it, so that a breaker created on first use
        in a late-joining replica starts in the state the cluster is in.
        """
        ...
