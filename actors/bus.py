"""The in-process event bus: breakers publish, subscribers consume, neither waits for the other.

``publish()`` never awaits and never runs subscriber code: it appends the event to each
interested subscription's own bounded buffer and, if that subscription is idle, starts its
delivery.  So a slow or failing subscriber can only hurt itself:

- a full buffer drops outcome events (``CallsRecorded``), counted in ``dropped``; it never drops
  a ``StateChanged``, which is why the bound is soft for those (they are rare by nature);
- an exception raised by a subscriber is logged and the next event is delivered as usual.

Three kinds of subscriber, told apart at ``subscribe()``:

- an :class:`~actors.runtime.Actor`: events go to its mailbox (the mailbox is the buffer);
- an async callable: awaited once per event, in order, by a task of the system's task group;
- a sync callable: called once per event, in order, on a worker thread, so that a subscriber
  that blocks does not block the loop the breakers run on.

Publishing an event type nobody subscribed to costs a dict lookup; breakers go further and ask
``wants(CallsRecorded)`` once per drain, so with no outcome subscriber they build nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from actors.events import CallsRecorded, ConfigChanged, Event, StateChanged
from actors.runtime import Actor, Runtime

logger = logging.getLogger("actors.bus")

ALL_EVENTS: tuple[type[Event], ...] = (StateChanged, CallsRecorded, ConfigChanged)

#: Event types a full buffer may drop; everything else is always delivered.
_DROPPABLE: frozenset[type[Event]] = frozenset({CallsRecorded})


class Subscription:
    """One subscriber's buffer and delivery state.  Close it to unsubscribe."""

    __slots__ = (
        "_active",
        "_buffer",
        "_bus",
        "_kind",
        "delivered",
        "dropped",
        "events",
        "failures",
        "limit",
        "subscriber",
    )

    def __init__(
        self,
        bus: EventBus,
        subscriber: Any,
        events: tuple[type[Event], ...],
        limit: int,
    ) -> None:
        self._bus = bus
        self.subscriber = subscriber
        self.events = events
        self.limit = limit
        self.dropped = 0
        self.delivered = 0
        self.failures = 0
        self._buffer: deque[Event] = deque()
        self._active = False
        if isinstance(subscriber, Actor):
            self._kind = "actor"
        elif inspect.iscoroutinefunction(subscriber) or inspect.iscoroutinefunction(
            getattr(subscriber, "__call__", None)  # noqa: B004 - async callable objects
        ):
            self._kind = "async"
        elif callable(subscriber):
            self._kind = "sync"
        else:
            raise TypeError(
                f"subscriber must be an actor, an async callable or a callable, got {subscriber!r}"
            )

    def __repr__(self) -> str:
        return (
            f"<Subscription {self._kind} {self.subscriber!r} buffered={len(self._buffer)} "
            f"delivered={self.delivered} dropped={self.dropped}>"
        )

    @property
    def pending(self) -> bool:
        return bool(self._buffer) or self._active

    def offer(self, event: Event) -> None:
        droppable = event.__class__ in _DROPPABLE
        if self._kind == "actor":
            actor: Actor = self.subscriber
            if droppable and len(actor._mailbox) >= self.limit:
                self._drop()
            else:
                actor.tell(event)
                self.delivered += 1
            return
        if droppable and len(self._buffer) >= self.limit:
            self._drop()
            return
        self._buffer.append(event)
        if not self._active:
            self._active = True
            try:
                self._bus._runtime.spawn(self._deliver)
            except BaseException:
                # No delivery runs: a raised flag would silence the subscription for good and
                # make ActorSystem.__aexit__ wait for it forever.
                self._active = False
                raise

    def _resume(self) -> None:
        """The runtime moved to a new loop, where no delivery task of this subscription runs:
        one cancelled before it started left ``_active`` up and would silence it for good."""
        self._active = self._kind != "actor" and bool(self._buffer)
        if self._active:
            self._bus._runtime.spawn(self._deliver)

    def _drop(self) -> None:
        self.dropped += 1
        self._bus.dropped += 1

    async def _deliver(self) -> None:
        buffer = self._buffer
        try:
            while True:
                while buffer:
                    batch = []
                    while buffer:
                        batch.append(buffer.popleft())
                    if self._kind == "async":
                        for event in batch:
                            await self._call_async(event)
                    else:
                        await anyio.to_thread.run_sync(self._call_batch, batch)
                # Clear the flag, then look again: an event offered between the last check and
                # the flag going down would otherwise wait for the next one.
                self._active = False
                if not buffer or self._active:
                    return
                self._active = True
        finally:
            self._active = False

    async def _call_async(self, event: Event) -> None:
        try:
            await self.subscriber(event)
            self.delivered += 1
        except Exception:
            self.failures += 1
            logger.exception("bus subscriber %r failed on %r", self.subscriber, event)

    def _call_batch(self, batch: list[Event]) -> None:
        for event in batch:
            try:
                self.subscriber(event)
                self.delivered += 1
            except Exception:
                self.failures += 1
                logger.exception("bus subscriber %r failed on %r", self.subscriber, event)

    def close(self) -> None:
        """Unsubscribe; events still buffered are discarded."""
        self._bus._remove(self)
        self._buffer.clear()


class EventBus:
    """Fan-out of breaker events to subscribers; see the module docstring for the contract."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._by_type: dict[type[Event], tuple[Subscription, ...]] = {}
        self._subscriptions: tuple[Subscription, ...] = ()
        self.dropped = 0
        runtime.add_idle_hook(self._has_pending)
        runtime.add_resume_hook(self._resume_deliveries)

    def __repr__(self) -> str:
        return f"<EventBus subscribers={len(self._subscriptions)} dropped={self.dropped}>"

    def subscribe(
        self,
        subscriber: Any,
        *,
        events: tuple[type[Event], ...] = ALL_EVENTS,
        buffer: int = 1024,
    ) -> Subscription:
        """Deliver ``events`` (types) to ``subscriber`` from now on.

        ``buffer`` bounds the events waiting for this subscriber; beyond it outcome events are
        dropped and counted.  Returns the :class:`Subscription`; ``close()`` it to stop.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer: expected int >= 1, got {buffer!r}")
        for event_type in events:
            if not (isinstance(event_type, type) and issubclass(event_type, Event)):
                raise TypeError(f"events: expected event classes, got {event_type!r}")
        subscription = Subscription(self, subscriber, tuple(events), buffer)
        self._subscriptions = (*self._subscriptions, subscription)
        self._reindex()
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
        self._reindex()

    def _reindex(self) -> None:
        # Copy-on-write: publish() iterates a tuple that no other thread mutates.
        index: dict[type[Event], list[Subscription]] = {}
        for subscription in self._subscriptions:
            for event_type in subscription.events:
                index.setdefault(event_type, []).append(subscription)
        self._by_type = {key: tuple(value) for key, value in index.items()}

    def wants(self, event_type: type[Event]) -> bool:
        """Whether anyone subscribed to ``event_type`` (so building it is worth the cost)."""
        return event_type in self._by_type

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every interested subscriber.  Never awaits, never raises."""
        for subscription in self._by_type.get(event.__class__, ()):
            try:
                subscription.offer(event)
            except Exception:
                logger.exception("bus could not offer %r to %r", event, subscription)

    def _has_pending(self) -> bool:
        return any(subscription.pending for subscription in self._subscriptions)

    def _resume_deliveries(self) -> None:
        for subscription in self._subscriptions:
            subscription._resume()

    def statistics(self) -> dict[str, Any]:
        """Counts for visibility: subscribers, events dropped, per-subscription figures."""
        return {
            "subscribers": len(self._subscriptions),
            "dropped": self.dropped,
            "subscriptions": [
                {
                    "subscriber": repr(s.subscriber),
                    "buffered": len(s._buffer),
                    "delivered": s.delivered,
                    "dropped": s.dropped,
                    "failures": s.failures,
                }
                for s in self._subscriptions
            ],
        }

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subscriptions


Callback = Callable[[Event], Any]
