"""The cluster link's life: connect, subscribe, resynchronise, serve, reconnect.

:class:`RedisCluster` ties the parts together (``keys``, ``scripts``, ``records``, ``lease``,
``counting``); the package docstring (``service.cluster``) says what the link does and
guarantees, and which alternatives were considered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from actors.bus import Subscription
from actors.config import CircuitState
from actors.errors import BreakerError, ConfigurationError
from actors.events import CallsRecorded, Event, StateChanged
from actors.system import ActorSystem
from service.cluster.counting import ClusterCounting
from service.cluster.keys import Keys
from service.cluster.lease import ProbeLeases
from service.cluster.records import (
    MAX_GENERATION_STEP,
    InvalidRecord,
    StateRecord,
    decode_record,
    encode,
    record_of,
    remote_state,
)
from service.cluster.scripts import Scripts, ms

logger = logging.getLogger("service.cluster")

LinkStatus = Literal["connected", "connecting", "disconnected"]

HALF_OPEN = CircuitState.HALF_OPEN

#: Invalid records are counted always, but warned about at most once per this many seconds.
DROP_WARNING_INTERVAL = 10.0


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for reprs, logs and statistics)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# Seconds: positive and finite (the bound is far above any sensible setting and refuses inf).
_Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=1e7)]
_Word = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^\S+$")]


class LinkSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """:class:`RedisCluster`'s parameters (documented there), validated once: each field by
    its constraint, the rules between fields in ``__post_init__``."""

    url: str
    namespace: _Word
    cluster_counting: bool
    replica_id: _Word | None
    lease_ttl: _Seconds
    record_ttl: _Seconds
    flush_interval: _Seconds
    counts_interval: _Seconds
    operation_timeout: _Seconds
    reconnect_min: _Seconds
    reconnect_max: _Seconds
    ping_interval: _Seconds

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"url: expected redis://, rediss:// or unix:// URL, got {redact_url(self.url)!r}"
            )
        if self.reconnect_max < self.reconnect_min:
            raise ValueError(
                f"reconnect_max: expected >= reconnect_min ({self.reconnect_min!r}), "
                f"got {self.reconnect_max!r}"
            )

    @classmethod
    def of(cls, values: dict[str, Any]) -> LinkSettings:
        """The settings in ``values``; raises :class:`ConfigurationError` starting with the
        name of the bad parameter (and never showing a password)."""
        try:
            return msgspec.convert(values, cls)
        except msgspec.ValidationError as exc:
            message = str(exc)
            found = re.fullmatch(r"(.*) - at `\$\.(\w+)`", message)
            if found:  # msgspec's "Expected ... - at `$.field`", field first like ours
                message = f"{found[2]}: {found[1]}"
            raise ConfigurationError(message) from None


class RedisCluster:
    """A cluster link over Redis (the ``service.cluster`` docstring says what it does and
    guarantees).

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
        settings = LinkSettings.of(
            {
                "url": url,
                "namespace": namespace,
                "cluster_counting": cluster_counting,
                "replica_id": replica_id,
                "lease_ttl": lease_ttl,
                "record_ttl": record_ttl,
                "flush_interval": flush_interval,
                "counts_interval": counts_interval,
                "operation_timeout": operation_timeout,
                "reconnect_min": reconnect_min,
                "reconnect_max": reconnect_max,
                "ping_interval": ping_interval,
            }
        )
        self._url = settings.url
        self._password = urlsplit(settings.url).password
        self.url = redact_url(settings.url)
        self.keys = Keys(settings.namespace)
        self.namespace = settings.namespace
        self.cluster_counting = settings.cluster_counting
        self.replica_id = (
            settings.replica_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.lease_ttl = settings.lease_ttl
        self.record_ttl = settings.record_ttl
        self.flush_interval = settings.flush_interval
        self.counts_interval = settings.counts_interval
        self.operation_timeout = settings.operation_timeout
        self.reconnect_min = settings.reconnect_min
        self.reconnect_max = settings.reconnect_max
        self.ping_interval = settings.ping_interval

        self._status: LinkStatus = "disconnected"
        self._system: ActorSystem | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._wake: asyncio.Event | None = None
        # Present only while connected: lease requests use them from their own tasks.
        self._client: aioredis.Redis | None = None
        self._scripts: Scripts | None = None
        # The newest cluster generation this replica knows, per breaker.
        self._known: dict[str, int] = {}
        # Local transitions not yet published (the latest per breaker; see _publish_pending).
        self._outbox: dict[str, StateChanged] = {}
        self._to_read: set[str] = set()
        self._writing: set[str] = set()  # breakers whose record this replica is writing
        self._subscription: Subscription | None = None
        self._dropped_since_warning = 0
        self._next_drop_warning = 0.0
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
        self._leases = ProbeLeases(
            self.keys, self.replica_id, self.lease_ttl, self.operation_timeout, self._counters
        )
        self._counting = ClusterCounting(self.keys, self._counters)

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
            "probing": len(self._leases.probing),
            **self._counters,
        }

    # -- the ClusterLink protocol ------------------------------------------------------------

    def request_probe(self, breaker: str, generation: int) -> None:
        """Race for ``breaker``'s probe lease without blocking (the actor's thread).

        Not connected: granted at once, so the breaker decides locally."""
        system = self._system
        assert system is not None, "attached before any breaker joins"
        if self._client is None:
            self._leases.grant_locally(system, breaker, generation)
        else:
            system.runtime.spawn(
                functools.partial(self._leases.race, self._scripts, system, breaker, generation)
            )

    def breaker_joined(self, breaker: str) -> None:
        """Fetch the cluster's news about a breaker created after the start (any thread)."""
        self._to_read.add(breaker)
        self._wake_soon()

    def attached(self, system: ActorSystem) -> None:
        """Listen to ``system``'s bus from now on (its thread, before ``run``): a transition
        made before the link's task first runs waits in the outbox like any other, and is
        published once the link is up."""
        if self._system is not None and self._system is not system:
            raise RuntimeError(f"{self!r} is already attached to another actor system")
        self._system = system
        if self._subscription is None:
            events: tuple[type[Event], ...] = (StateChanged,)
            if self.cluster_counting:
                events = (StateChanged, CallsRecorded)
            self._subscription = system.bus.subscribe(self._on_event, events=events, buffer=4096)

    async def run(self, system: ActorSystem) -> None:
        """Keep the link up until cancelled (a task of ``system``'s task group)."""
        self.attached(system)
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake = asyncio.Event()
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
            if self._subscription is not None:
                self._subscription.close()
                self._subscription = None
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
            scripts = Scripts(client)
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
            self._counting.clear()
            if was_connected:
                self._counters["disconnects"] += 1
                self._status = "disconnected"
                if self.cluster_counting:
                    self._counting.use_local(system)
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
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

    async def _resync(self, client: aioredis.Redis, scripts: Scripts, system: ActorSystem) -> None:
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
            record = self._decode(message["data"], None)
            if record is not None:
                self._consider(system, record, self.lease_ttl)

    async def _sync_loop(
        self, client: aioredis.Redis, scripts: Scripts, system: ActorSystem
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
        self, client: aioredis.Redis, scripts: Scripts, system: ActorSystem
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
                await self._counting.flush(client, scripts, system)
                if now >= next_counts:
                    next_counts = now + self.counts_interval
                    await self._counting.post(scripts, client, system, int(self._epoch(system)))
            if self._leases.probing and now >= next_renew:
                next_renew = now + self.lease_ttl / 3
                await self._leases.renew(client, scripts)
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
            if self._client is not None and self._system is not None:
                # Apart from the cluster, breakers count locally anyway.
                self._counting.count(self._system, event)
            return
        if not isinstance(event, StateChanged):
            return
        name = event.breaker
        if event.from_state is HALF_OPEN:
            self._leases.probing.discard(name)
        if event.reason == "cluster" or self._system is None or self._system.get(name) is None:
            return  # remote news applied here, or a breaker that is not in the cluster
        if event.to_state is HALF_OPEN:
            self._leases.probing.add(name)  # only the lease holder goes HALF_OPEN by itself
        self._outbox[name] = event
        if self._wake is not None:
            self._wake.set()

    async def _publish_pending(self, scripts: Scripts, system: ActorSystem) -> None:
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
        scripts: Scripts,
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
        record = record_of(snapshot, self._epoch(system), self.replica_id)
        self._writing.add(name)
        try:
            reply = await scripts.publish(
                keys=[self.keys.state(name), self.keys.lease(name)],
                args=[
                    encode(record),
                    self._known.get(name, 0),
                    mode,
                    ms(self.record_ttl),
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

    async def _read_records(
        self,
        client: aioredis.Redis,
        scripts: Scripts,
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
            # Not raising: a key of ours holding another type is garbage, not a lost link.
            replies = await pipe.execute(raise_on_error=False)
        for index, name in enumerate(names):
            raw, lease_ms = replies[2 * index], replies[2 * index + 1]
            record = None if raw is None else self._decode(raw, name)
            lease_ms = lease_ms if isinstance(lease_ms, int) else 0  # PTTL: -2 when absent
            lease_left = min(max(lease_ms, 0) / 1000, self.lease_ttl)
            known = self._known.get(name, 0)
            if record is not None and record.generation > known:
                self._consider(system, record, lease_left)
            elif (
                known and (record is None or record.generation < known) and name not in self._outbox
            ):
                await self._write(scripts, system, name, "seed", None)

    def _decode(self, raw: object, key_of: str | None) -> StateRecord | None:
        """The record in ``raw`` (from the channel, or from the state key of ``key_of``), or
        None: anything else is dropped, counted, and warned about once per interval."""
        try:
            record = decode_record(raw)
            if key_of is not None and record.breaker != key_of:
                raise InvalidRecord(f"a record of {record.breaker!r} under the key of {key_of!r}")
        except InvalidRecord as exc:
            self._drop(str(exc))
            return None
        return record

    def _drop(self, reason: str) -> None:
        self._counters["malformed"] += 1
        self._dropped_since_warning += 1
        now = time.monotonic()
        if now >= self._next_drop_warning:
            logger.warning(
                "cluster link %s: dropped %d invalid record(s) since the last warning; the "
                "latest: %s",
                self.url,
                self._dropped_since_warning,
                reason[:200],  # it may quote a received name
            )
            self._dropped_since_warning = 0
            self._next_drop_warning = now + DROP_WARNING_INTERVAL

    def _consider(self, system: ActorSystem, record: StateRecord, lease_left: float) -> None:
        """Apply ``record`` if it is the newest news about one of this system's breakers."""
        name = record.breaker
        breaker = system.get(name)
        if breaker is None:
            return  # not ours (yet): `breaker_joined` reads it when the breaker is created
        known = self._known.get(name, 0)
        if record.generation <= known:
            self._counters["stale"] += 1
            return
        if record.generation > known + MAX_GENERATION_STEP:
            # Believing it would pin the breaker's generation far ahead of any real one.
            self._drop(f"generation {record.generation} of {name!r}: too far ahead of {known}")
            return
        self._known[name] = record.generation
        if record.origin == self.replica_id and name in self._writing:
            return  # our own news, back before the script's reply
        now = self._epoch(system)
        system.post(name, remote_state(record, now, lease_left, breaker.config))
        self._counters["applied"] += 1

    async def _refresh_records(self, client: aioredis.Redis, system: ActorSystem) -> None:
        names = list(system.breakers())
        if not names:
            return
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pexpire(self.keys.state(name), ms(self.record_ttl))
            await pipe.execute()

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
