"""Cluster mode over Redis: the breakers of one name in many processes act as one.

:class:`RedisCluster` is a cluster link (see ``actors.cluster``) built on redis-py's asyncio
client.  Nothing imports this module unless cluster mode is used, so a service without it never
imports ``redis``.  Wire it with ``ActorSystem(cluster=RedisCluster(url=...))`` or
``system.attach_cluster(RedisCluster(url=...))``.

The parts: ``keys`` (names), ``scripts`` (the Lua scripts), ``records`` (the state record
and what a replica makes of one), ``lease`` (the probe lease), ``counting`` (cluster
counting) and ``link`` (:class:`RedisCluster`: the connection's life, tying them together).

What it does
------------
- **Propagation.**  Local transitions arrive as ``StateChanged`` events on the bus.  For each,
  the link writes the breaker's *state record* and publishes it on the namespace's channel, in
  one Lua script, under a new cluster-wide *generation*.  Every replica applies a record whose
  generation is newer than any it knows (``ApplyRemoteState``); older ones are dropped.
  Transitions that remote news caused (``reason="cluster"``) are not sent back.
- **Generations.**  The script gives ``max(stored, floor) + 1``, where ``floor`` is the newest
  generation the writing replica knows (a Lamport clock), so generations keep increasing even
  when Redis lost its data (restart without persistence, expired record): the newest wins.
  The arithmetic is exact (``HINCRBY``, and text Redis stored, never a formatted Lua double).
- **Received input is checked.**  Every record received, on the channel or from a key, is
  checked field by field with its range before it is believed (``records``), and dropped
  otherwise (counted; one warning per interval).  A record may move what a replica knows at
  most ``MAX_GENERATION_STEP`` ahead, a stored generation that is not a valid one is replaced,
  and a key of ours holding another type is deleted by the next script that writes it: no
  received value can stop later changes from propagating.
- **Changes before the link is up** (even before its task first runs) are queued from the
  moment the link is attached (``attached``) and published once it is up.
- **Late joiners** read the records of their named breakers when the link connects, after every
  reconnect, and for each breaker created later (``breaker_joined``).
- **One probe for the cluster.**  When a break ends, the breaker asks for the *probe lease*
  (``SET NX PX`` on the lease key).  The holder goes HALF_OPEN (published, so the others keep
  rejecting for the lease's time) and renews the lease while it probes; its verdict is
  published like any transition and releases the lease in the same script.  A refused replica
  gets ``ProbeLeaseDecided(granted=False, retry_in=<the lease's time left>)``.
- **Cluster counting** (``cluster_counting=True``): outcomes from ``CallsRecorded`` are summed
  per breaker and wall-clock second and flushed every ``flush_interval`` (never per call) into
  per-second buckets; every ``counts_interval`` the link posts ``ClusterCounts`` (the last
  ``monitoring_window`` seconds of all replicas) to breakers with a time-based rate policy.
  Count-based windows (``sliding_window_size``) and the consecutive-failure rule stay local:
  "the last N calls" and "N in a row" have no cluster-wide order at this batching.

When Redis is slow or down
--------------------------
The hot path never touches the link: guarded calls cost what they cost without it.  Every Redis
operation is bounded by ``operation_timeout``.  While the link is not connected: a lease request
is granted at once (each replica probes for itself), local transitions wait in a one-per-breaker
outbox, rate policies go back to local counts (``UseLocalCounts``).  The link reconnects with
jittered exponential backoff and resynchronises: it first publishes the transitions it holds
(they get the newest generations), then reads every record, applies the newer ones, and writes
back (*seeds*) records that Redis lost.

Keys (``{ns}`` is the namespace; every key has a TTL, so nothing accumulates)
-------------------------------------------------------------------------------
- ``{ns}:state:{breaker}``: hash ``generation``, ``record`` (JSON: breaker, state, forced,
  open_until (epoch seconds, OPEN only), origin (replica id), at, generation); TTL
  ``record_ttl``, refreshed by every live replica that has the breaker.
- ``{ns}:lease:{breaker}``: string, the holder's replica id; TTL ``lease_ttl``, renewed by the
  holder while it probes.
- ``{ns}:counts:{breaker}:{epoch second}``: hash ``s``, ``f``, ``w`` (successes, failures, slow
  calls); TTL ``monitoring_window`` + 10 s.
- ``{ns}:events``: the pub/sub channel (not a key).

Alternatives considered: Redis streams instead of pub/sub would let a replica replay what it
missed, but the state record already gives the only thing that matters after a gap (the newest
state); keyspace notifications would need server configuration.  A per-call ``INCR`` would be
simpler than batched buckets but puts a network round trip beside every call.
"""

from __future__ import annotations

from actors.extras import missing_extra

try:
    import redis.asyncio  # noqa: F401  (present only with the extra)
except ImportError as exc:
    raise missing_extra("redis", "cluster", "breakerd's cluster mode") from exc

from service.cluster.counting import counted_cluster_wide, slow_calls
from service.cluster.keys import Keys
from service.cluster.link import LinkStatus, RedisCluster, redact_url
from service.cluster.records import StateRecord

__all__ = [
    "Keys",
    "LinkStatus",
    "RedisCluster",
    "StateRecord",
    "counted_cluster_wide",
    "redact_url",
    "slow_calls",
]
