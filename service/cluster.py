"""Cluster mode over Redis: the breakers of one name in many processes act as one.

:class:`RedisCluster` is a cluster link (see ``actors.cluster``) built on redis-py's asyncio
client.  Nothing imports this module unless cluster mode is used, so a service without it never
imports ``redis``.  Wire it with ``ActorSystem(cluster=RedisCluster(url=...))`` or
``system.attach_cluster(RedisCluster(url=...))``.

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

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import socket
import threading
import uuid
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from actors.config import CircuitBreakerConfig, CircuitState
from actors.errors import BreakerError, ConfigurationError
from actors.events import CallsRecorded, Event, StateChanged
from actors.messages import ApplyRemoteState, ClusterCounts, ProbeLeaseDecided, UseLocalCounts
from actors.snapshot import CircuitBreakerMetrics
from actors.stats import DURATION_BOUNDS
from actors.system import ActorSystem

logger = logging.getLogger("service.cluster")

LinkStatus = Literal["connected", "connecting", "disconnected"]

HALF_OPEN = CircuitState.HALF_OPEN

# Counts buckets outlive the window they serve by this much, for clocks a little apart.
_COUNTS_SLACK = 10.0


class StateRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One breaker's cluster state, as stored in ``{ns}:state:{breaker}`` and published.

    ``generation`` is left out when encoding (it is 0 then): the publish script inserts the one
    it assigns."""

    breaker: str
    state: Literal["closed", "open", "half_open"]
    forced: bool = False
    open_until: float | None = None
    origin: str
    at: float
    generation: int = 0


_decode_record = msgspec.json.Decoder(StateRecord).decode
_encode = msgspec.json.Encoder().encode


class Keys:
    """The namespace's key and channel names (see the module docstring for their contents)."""

    __slots__ = ("channel", "namespace")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.channel = f"{namespace}:events"

    def state(self, breaker: str) -> str:
        return f"{self.namespace}:state:{breaker}"

    def lease(self, breaker: str) -> str:
        return f"{self.namespace}:lease:{breaker}"

    def counts(self, breaker: str, second: int) -> str:
        return f"{self.namespace}:counts:{breaker}:{second}"


# -- Lua scripts: each runs atomically, which is what makes generations and leases safe -------

# KEYS: state record, lease.  ARGV: record JSON (without generation), floor, mode ("set" or
# "seed"), record TTL ms, channel, replica id, "1" to release this replica's lease.
# "set" takes a new generation above everything known; "seed" restores a record Redis lost,
# under the writer's newest known generation, and only if nothing newer is stored.
_PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'generation')) or 0
local floor = tonumber(ARGV[2])
local generation
if ARGV[3] == 'seed' then
  if current >= floor then return {current, 0} end
  generation = floor
else
  generation = math.max(current, floor) + 1
end
local record = '{"generation":' .. string.format('%d', generation) .. ',' .. string.sub(ARGV[1], 2)
redis.call('HSET', KEYS[1], 'generation', generation, 'record', record)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[7] == '1' and redis.call('GET', KEYS[2]) == ARGV[6] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[5], record)
return {generation, 1}
"""

# KEYS: lease.  ARGV: replica id, TTL ms.  Returns {granted, ms}: the lease's TTL when granted
# (re-entrant for its holder), the time it has left when refused.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(ARGV[2])}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(ARGV[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lease.  ARGV: replica id, TTL ms.  Extends the lease only for its holder.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: count buckets.  Returns the sums {successes, failures, slow}.
_SUM = """
local s, f, w = 0, 0, 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 's', 'f', 'w')
  s = s + (tonumber(v[1]) or 0)
  f = f + (tonumber(v[2]) or 0)
  w = w + (tonumber(v[3]) or 0)
end
return {s, f, w}
"""


class _Scripts:
    """The scripts, registered on one client (one per connection attempt)."""

    __slots__ = ("acquire", "publish", "renew", "sum")

    def __init__(self, client: aioredis.Redis) -> None:
        self.publish = client.register_script(_PUBLISH)
        self.acquire = client.register_script(_ACQUIRE)
        self.renew = client.register_script(_RENEW)
        self.sum = client.register_script(_SUM)


def counted_cluster_wide(config: CircuitBreakerConfig) -> bool:
    """Whether cluster counting serves this config: a rate policy over a time window."""
    return config.uses_rate_window and config.sliding_window_size is None


def slow_calls(buckets: Iterable[int], slow_after: float | None) -> int:
    """Calls in ``buckets`` (of :data:`DURATION_BOUNDS`) that were surely slower than
    ``slow_after``: only whole buckets above it count, so this errs low by at most the one
    bucket (about 19 % wide) that straddles the threshold."""
    if slow_after is None:
        return 0
    first = bisect_left(DURATION_BOUNDS, slow_after) + 1
    return sum(list(buckets)[first:])


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for reprs, logs and statistics)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name}: expected a number of seconds > 0, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name}: expected a number of seconds > 0, got {value!r}")
    return float(value)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisCluster:
    """A cluster link over Redis (see the module docstring for what it does and guarantees).

    Parameters (seconds unless said otherwise):

    - ``url``: ``redis://[user:password@]host:port/db``, ``rediss://`` or ``unix://``.
    - ``namespace``: prefix of every key and of the channel; replicas that share it share
      breakers by name.
    - ``cluster_counting``: count outcomes for the whole cluster (time-based rate policies).
    - ``replica_id``: this replica's name in records and leases (default host:pid:random).
    - ``lease_ttl``: the probe lease's lifetime, renewed while its holder probes; a replica
      that dies while probing holds the others back this long at most.
    - ``record_ttl``: the state records' lifetime, refreshed by live replicas.
    - ``flush_interval`` / ``counts_interval``: how often counts are written / read.
    - ``operation_timeout``: the bound on each Redis operation (and on connecting).
    - ``reconnect_min`` / ``reconnect_max``: the reconnect backoff's range.
    - ``ping_interval``: how often an idle connection is checked.

    Raises :class:`~actors.errors.ConfigurationError` naming the bad parameter.  Attach one
    instance to one actor system.  ``status`` and ``statistics()`` may be read from any thread.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "breakerd",
        cluster_counting: bool = False,
        replica_id: str | None = None,
        lease_ttl: float = 5.0,
        record_ttl: float = 3600.0,
        flush_interval: float = 0.075,
        counts_interval: float = 0.25,
        operation_timeout: float = 0.5,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        ping_interval: float = 1.0,
    ) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            shown = redact_url(url) if isinstance(url, str) else repr(url)
            raise ConfigurationError(
                f"url: expected redis://, rediss:// or unix:// URL, got {shown!r}"
            )
        if not isinstance(namespace, str) or not namespace or any(c.isspace() for c in namespace):
            raise ConfigurationError(
                f"namespace: expected a non-empty string without spaces, got {namespace!r}"
            )
        if not isinstance(cluster_counting, bool):
            raise ConfigurationError(f"cluster_counting: expected a bool, got {cluster_counting!r}")
        if replica_id is not None and (not isinstance(replica_id, str) or not replica_id):
            raise ConfigurationError(f"replica_id: expected a non-empty string, got {replica_id!r}")
        self._url = url
        self._password = urlsplit(url).password
        self.url = redact_url(url)
        self.keys = Keys(namespace)
        self.namespace = namespace
        self.cluster_counting = cluster_counting
        self.replica_id = (
            replica_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.lease_ttl = _positive("lease_ttl", lease_ttl)
        self.record_ttl = _positive("record_ttl", record_ttl)
        self.flush_interval = _positive("flush_interval", flush_interval)
        self.counts_interval = _positive("counts_interval", counts_interval)
        self.operation_timeout = _positive("operation_timeout", operation_timeout)
        self.reconnect_min = _positive("reconnect_min", reconnect_min)
        self.reconnect_max = _positive("reconnect_max", reconnect_max)
        self.ping_interval = _positive("ping_interval", ping_interval)
        if self.reconnect_max < self.reconnect_min:
            raise ConfigurationError(
                f"reconnect_max: expected >= reconnect_min ({reconnect_min!r}), "
                f"got {reconnect_max!r}"
            )

        self._status: LinkStatus = "disconnected"
        self._system: ActorSystem | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._wake: asyncio.Event | None = None
        # Present only while connected: lease requests use them from their own tasks.
        self._client: aioredis.Redis | None = None
        self._scripts: _Scripts | None = None
        # The newest cluster generation this replica knows, per breaker.
        self._known: dict[str, int] = {}
        # Local transitions not yet published (the latest per breaker; see _publish_pending).
        self._outbox: dict[str, StateChanged] = {}
        self._to_read: set[str] = set()
        self._probing: set[str] = set()  # breakers this replica probes for (lease held)
        self._writing: set[str] = set()  # breakers whose record this replica is writing
        self._early_requests: list[tuple[str, int]] = []
        self._counts: dict[tuple[str, int], list[int]] = {}
        self._last_error: str | None = None
        self._connected_since: float | None = None
        self._counters = dict.fromkeys(
            (
                "connects",
                "disconnects",
                "published",
                "seeded",
                "received",
                "applied",
                "stale",
                "superseded",
                "malformed",
                "leases_granted",
                "leases_refused",
                "leases_local",
                "counts_flushed",
                "counts_posted",
            ),
            0,
        )

    def __repr__(self) -> str:
        return (
            f"<RedisCluster {self.url} ns={self.namespace!r} {self._status} "
            f"replica={self.replica_id!r} pending={len(self._outbox)}>"
        )

    # -- visibility (any thread) -------------------------------------------------------------

    @property
    def status(self) -> LinkStatus:
        """``connected`` (subscribed and resynchronised), ``connecting`` (an attempt is under
        way) or ``disconnected`` (waiting to retry, or not running)."""
        return self._status

    def statistics(self) -> dict[str, Any]:
        """The link's state and counters, JSON-ready (no secrets: the URL is redacted)."""
        return {
            "status": self._status,
            "url": self.url,
            "namespace": self.namespace,
            "replica_id": self.replica_id,
            "cluster_counting": self.cluster_counting,
            "connected_since": self._connected_since,
            "last_error": self._last_error,
            "pending_transitions": len(self._outbox),
            "probing": len(self._probing),
            **self._counters,
        }

    # -- the ClusterLink protocol ------------------------------------------------------------

    def request_probe(self, breaker: str, generation: int) -> None:
        """Race for ``breaker``'s probe lease without blocking (the actor's thread).

        Not connected: granted at once, so the breaker decides locally."""
        system = self._system
        if system is None:  # attached, but `run` has not started yet: answered when it does
            self._early_requests.append((breaker, generation))
        elif self._client is None:
            self._grant_locally(system, breaker, generation)
        else:
            system.runtime.spawn(functools.partial(self._race, system, breaker, generation))

    def breaker_joined(self, breaker: str) -> None:
        """Fetch the cluster's news about a breaker created after the start (any thread)."""
        self._to_read.add(breaker)
        self._wake_soon()

    async def run(self, system: ActorSystem) -> None:
        """Keep the link up until cancelled (a task of ``system``'s task group)."""
        if self._system is not None and self._system is not system:
            raise RuntimeError(f"{self!r} is already attached to another actor system")
        self._system = system
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake = asyncio.Event()
        early, self._early_requests = self._early_requests, []
        for breaker, generation in early:
            self._grant_locally(system, breaker, generation)
        events: tuple[type[Event], ...] = (StateChanged,)
        if self.cluster_counting:
            events = (StateChanged, CallsRecorded)
        subscription = system.bus.subscribe(self._on_event, events=events, buffer=4096)
        attempt = 0
        try:
            while True:
                self._status = "connecting"
                try:
                    await self._session(system)
                except* Exception as group:
                    self._note_failure(group)
                if self._connected_since is not None:
                    attempt = 0  # it had worked: start the backoff afresh
                self._connected_since = None
                self._status = "disconnected"
                delay = min(self.reconnect_max, self.reconnect_min * 2**attempt)
                attempt = min(attempt + 1, 30)
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
        finally:
            subscription.close()
            self._status = "disconnected"
            self._connected_since = None

    # -- one connection's life ---------------------------------------------------------------

    async def _session(self, system: ActorSystem) -> None:
        """Connect, subscribe, resynchronise, then serve until something fails (raises)."""
        client = aioredis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_timeout=self.operation_timeout,
            socket_connect_timeout=self.operation_timeout,
            retry=Retry(NoBackoff(), 0),  # the link has its own reconnect policy
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            with anyio.fail_after(self.operation_timeout * 2):
                await pubsub.subscribe(self.keys.channel)
            scripts = _Scripts(client)
            # Subscribed first, then resynchronised: news published in between waits in the
            # socket and is judged by its generation like any other.
            await self._resync(client, scripts, system)
            self._client, self._scripts = client, scripts
            self._status = "connected"
            self._connected_since = self._epoch(system)
            self._counters["connects"] += 1
            logger.info("cluster link %s connected (namespace %r)", self.url, self.namespace)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._listen, pubsub, system)
                tasks.start_soon(self._sync_loop, client, scripts, system)
                tasks.start_soon(self._maintain, client, scripts, system)
        finally:
            was_connected = self._client is not None
            self._client = self._scripts = None
            self._counts.clear()
            if was_connected:
                self._counters["disconnects"] += 1
                self._status = "disconnected"
                self._use_local_counts(system)
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated upstream
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _note_failure(self, group: BaseExceptionGroup[Exception]) -> None:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        text = f"{type(error).__name__}: {error}"
        if self._password:
            text = text.replace(self._password, "***")
        repeated, self._last_error = text == self._last_error, text
        if isinstance(error, OSError | TimeoutError | aioredis.RedisError):
            # Once per kind of trouble: a long outage must not fill the log.
            logger.log(
                logging.DEBUG if repeated else logging.WARNING,
                "cluster link %s: %s; deciding locally, will retry",
                self.url,
                text,
            )
        else:  # a bug, not the network: say where, but keep the breakers going
            logger.error("cluster link %s failed; will retry", self.url, exc_info=error)

    async def _resync(self, client: aioredis.Redis, scripts: _Scripts, system: ActorSystem) -> None:
        """Publish what happened here while apart (it is the newest), then catch up."""
        await self._publish_pending(scripts, system)
        self._to_read.clear()
        await self._read_records(client, scripts, system, list(system.breakers()))

    async def _listen(self, pubsub: Any, system: ActorSystem) -> None:
        while True:
            # A bounded wait (not a blocking read) behaves the same on every redis-py version.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            self._counters["received"] += 1
            record = self._decode(message["data"])
            if record is not None:
                self._consider(system, record, self.lease_ttl)

    async def _sync_loop(
        self, client: aioredis.Redis, scripts: _Scripts, system: ActorSystem
    ) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            await wake.wait()
            wake.clear()
            if self._outbox:
                await self._publish_pending(scripts, system)
            if self._to_read:
                names, self._to_read = self._to_read, set()
                await self._read_records(client, scripts, system, names)

    async def _maintain(
        self, client: aioredis.Redis, scripts: _Scripts, system: ActorSystem
    ) -> None:
        """Periodic work: flush and read counts, renew leases, check the connection, keep
        the records of live breakers from expiring."""
        tick = min(1.0, self.ping_interval, self.lease_ttl / 3)
        if self.cluster_counting:
            tick = min(tick, self.flush_interval)
        clock = anyio.current_time
        next_counts = next_renew = next_ping = clock()
        next_refresh = clock() + self.record_ttl / 4
        while True:
            await anyio.sleep(tick)
            now = clock()
            if self.cluster_counting:
                await self._flush_counts(client)
                if now >= next_counts:
                    next_counts = now + self.counts_interval
                    await self._post_cluster_counts(scripts, client, system)
            if self._probing and now >= next_renew:
                next_renew = now + self.lease_ttl / 3
                await self._renew_leases(client, scripts)
            if now >= next_ping:
                next_ping = now + self.ping_interval
                with anyio.fail_after(self.operation_timeout):
                    await client.ping()
            if now >= next_refresh:
                next_refresh = now + self.record_ttl / 4
                await self._refresh_records(client, system)

    # -- state records -----------------------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        """Bus subscriber (the system's loop).  Only notes the event: no Redis here."""
        if isinstance(event, CallsRecorded):
            self._count(event)
            return
        if not isinstance(event, StateChanged):
            return
        name = event.breaker
        if event.from_state is HALF_OPEN:
            self._probing.discard(name)
        if event.reason == "cluster" or self._system is None or self._system.get(name) is None:
            return  # remote news applied here, or a breaker that is not in the cluster
        if event.to_state is HALF_OPEN:
            self._probing.add(name)  # only the lease holder goes HALF_OPEN by itself
        self._outbox[name] = event
        if self._wake is not None:
            self._wake.set()

    async def _publish_pending(self, scripts: _Scripts, system: ActorSystem) -> None:
        pending, self._outbox = self._outbox, {}
        done: set[str] = set()
        try:
            for name, event in pending.items():
                await self._write(scripts, system, name, "set", event.to_state)
                done.add(name)
        except BaseException:
            # Keep what was not published for the next connection; a newer event wins.
            for name, event in pending.items():
                if name not in done:
                    self._outbox.setdefault(name, event)
            raise

    async def _write(
        self,
        scripts: _Scripts,
        system: ActorSystem,
        name: str,
        mode: Literal["set", "seed"],
        expected: CircuitState | None,
    ) -> None:
        """Write (and publish) the breaker's current state.

        The state written is a fresh snapshot, not the event: an event whose state the
        breaker has already left (remote news applied since, or a newer local transition on
        its way) is superseded and not written, so a replica never announces a state it no
        longer has."""
        breaker = system.get(name)
        if breaker is None:
            return
        try:
            snapshot = await breaker.metrics_async()
        except BreakerError:  # the system is closing
            return
        if expected is not None and snapshot.state is not expected:
            self._counters["superseded"] += 1
            return
        record = self._record_of(system, snapshot)
        self._writing.add(name)
        try:
            reply = await scripts.publish(
                keys=[self.keys.state(name), self.keys.lease(name)],
                args=[
                    _encode(record),
                    self._known.get(name, 0),
                    mode,
                    _ms(self.record_ttl),
                    self.keys.channel,
                    self.replica_id,
                    "0" if snapshot.state is HALF_OPEN else "1",
                ],
            )
        finally:
            self._writing.discard(name)
        generation, written = int(reply[0]), int(reply[1])
        if written:
            self._known[name] = max(self._known.get(name, 0), generation)
            self._counters["published" if mode == "set" else "seeded"] += 1

    def _record_of(self, system: ActorSystem, snapshot: CircuitBreakerMetrics) -> StateRecord:
        now = self._epoch(system)
        retry_after = snapshot.retry_after
        open_until = None
        if retry_after is not None and math.isfinite(retry_after) and not snapshot.forced:
            open_until = now + retry_after
        return StateRecord(
            breaker=snapshot.name,
            state=snapshot.state.value,
            forced=snapshot.forced,
            open_until=open_until,
            origin=self.replica_id,
            at=now,
        )

    async def _read_records(
        self,
        client: aioredis.Redis,
        scripts: _Scripts,
        system: ActorSystem,
        names: Iterable[str],
    ) -> None:
        """Apply the stored records that are newer than what this replica knows; seed back
        those that Redis lost (missing, or older than what this replica knows)."""
        names = [name for name in names if system.get(name) is not None]
        if not names:
            return
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self.keys.state(name), "record")
                pipe.pttl(self.keys.lease(name))
            replies = await pipe.execute()
        for index, name in enumerate(names):
            raw, lease_ms = replies[2 * index], int(replies[2 * index + 1])
            record = None if raw is None else self._decode(raw)
            known = self._known.get(name, 0)
            if record is not None and record.generation > known:
                self._consider(system, record, max(lease_ms, 0) / 1000)
            elif (
                known and (record is None or record.generation < known) and name not in self._outbox
            ):
                await self._write(scripts, system, name, "seed", None)

    def _decode(self, raw: str | bytes) -> StateRecord | None:
        try:
            return _decode_record(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._counters["malformed"] += 1
            logger.warning("cluster link %s: ignoring a malformed record: %s", self.url, exc)
            return None

    def _consider(self, system: ActorSystem, record: StateRecord, lease_left: float) -> None:
        """Apply ``record`` if it is the newest news about one of this system's breakers."""
        name = record.breaker
        if system.get(name) is None:
            return  # not ours (yet): `breaker_joined` reads it when the breaker is created
        if record.generation <= self._known.get(name, 0):
            self._counters["stale"] += 1
            return
        self._known[name] = record.generation
        if record.origin == self.replica_id and name in self._writing:
            return  # our own news, back before the script's reply
        if record.state == "open" and not record.forced:
            remaining = max(0.0, (record.open_until or 0.0) - self._epoch(system))
            message = ApplyRemoteState(state="open", remaining=remaining)
        elif record.state == "half_open":
            # Another replica holds the probe lease: keep rejecting while it may probe.
            message = ApplyRemoteState(state="half_open", remaining=lease_left)
        else:
            message = ApplyRemoteState(state=record.state, forced=record.forced)
        system.post(name, message)
        self._counters["applied"] += 1

    async def _refresh_records(self, client: aioredis.Redis, system: ActorSystem) -> None:
        names = list(system.breakers())
        if not names:
            return
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pexpire(self.keys.state(name), _ms(self.record_ttl))
            await pipe.execute()

    # -- the probe lease ---------------------------------------------------------------------

    async def _race(self, system: ActorSystem, breaker: str, generation: int) -> None:
        """Runs as its own task, so that a slow Redis delays no one but this breaker's
        probe, and only up to ``operation_timeout``; any trouble grants the lease locally."""
        scripts = self._scripts
        try:
            if scripts is None:
                raise ConnectionError("not connected")
            with anyio.fail_after(self.operation_timeout):
                granted, ms = await scripts.acquire(
                    keys=[self.keys.lease(breaker)],
                    args=[self.replica_id, _ms(self.lease_ttl)],
                )
        except Exception as exc:
            logger.info("probe lease for %r decided locally: %r", breaker, exc)
            self._grant_locally(system, breaker, generation)
            return
        if int(granted):
            self._counters["leases_granted"] += 1
            system.post(breaker, ProbeLeaseDecided(generation=generation, granted=True))
        else:
            self._counters["leases_refused"] += 1
            retry_in = max(int(ms), 50) / 1000  # PTTL is negative if it just expired
            system.post(
                breaker,
                ProbeLeaseDecided(generation=generation, granted=False, retry_in=retry_in),
            )

    def _grant_locally(self, system: ActorSystem, breaker: str, generation: int) -> None:
        self._counters["leases_local"] += 1
        system.post(breaker, ProbeLeaseDecided(generation=generation, granted=True))

    async def _renew_leases(self, client: aioredis.Redis, scripts: _Scripts) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for name in self._probing:
                await scripts.renew(
                    keys=[self.keys.lease(name)],
                    args=[self.replica_id, _ms(self.lease_ttl)],
                    client=pipe,
                )
            await pipe.execute()

    # -- cluster counting --------------------------------------------------------------------

    def _count(self, event: CallsRecorded) -> None:
        if self._client is None or self._system is None:
            return  # apart from the cluster, breakers count locally anyway
        breaker = self._system.get(event.breaker)
        if breaker is None or not counted_cluster_wide(breaker.config):
            return
        slow = slow_calls(event.duration_buckets, breaker.config.slow_call_duration)
        bucket = self._counts.setdefault((event.breaker, int(event.at)), [0, 0, 0])
        bucket[0] += event.successes
        bucket[1] += event.failures
        bucket[2] += slow

    async def _flush_counts(self, client: aioredis.Redis) -> None:
        if not self._counts or self._system is None:
            return
        counts, self._counts = self._counts, {}
        # MULTI/EXEC, so that no bucket is ever created without its TTL.
        async with client.pipeline(transaction=True) as pipe:
            for (name, second), (successes, failures, slow) in counts.items():
                breaker = self._system.get(name)
                window = breaker.config.monitoring_window if breaker is not None else 0.0
                key = self.keys.counts(name, second)
                for field, value in (("s", successes), ("f", failures), ("w", slow)):
                    if value:
                        pipe.hincrby(key, field, value)
                pipe.pexpire(key, _ms(window + _COUNTS_SLACK))
            await pipe.execute()
        self._counters["counts_flushed"] += len(counts)

    async def _post_cluster_counts(
        self, scripts: _Scripts, client: aioredis.Redis, system: ActorSystem
    ) -> None:
        targets = [
            (name, breaker.config)
            for name, breaker in system.breakers().items()
            if counted_cluster_wide(breaker.config)
        ]
        if not targets:
            return
        second = int(self._epoch(system))
        async with client.pipeline(transaction=False) as pipe:
            for name, config in targets:
                span = max(1, math.ceil(config.monitoring_window))
                keys = [self.keys.counts(name, s) for s in range(second - span + 1, second + 1)]
                await scripts.sum(keys=keys, client=pipe)
            sums = await pipe.execute()
        for (name, _), (successes, failures, slow) in zip(targets, sums, strict=True):
            counts = ClusterCounts(successes=int(successes), failures=int(failures), slow=int(slow))
            system.post(name, counts)
        self._counters["counts_posted"] += len(targets)

    def _use_local_counts(self, system: ActorSystem) -> None:
        if self.cluster_counting:
            for name, breaker in system.breakers().items():
                if counted_cluster_wide(breaker.config):
                    system.post(name, UseLocalCounts())

    # -- helpers -----------------------------------------------------------------------------

    def _wake_soon(self) -> None:
        """Wake the sync loop from any thread."""
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return  # not running yet: the first resync reads every breaker
        if threading.get_ident() == self._thread_id:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wake.set)

    @staticmethod
    def _epoch(system: ActorSystem) -> float:
        clock = system.clock
        return clock.wall(clock.now())
