"""The runtime: mailboxes, inline asks on the loop thread, asks from other threads and loops,
supervision, and what a closed or never-started system says."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec
import pytest

from actors import ActorCrashedError, ActorSystem, ActorSystemClosedError, Runtime
from actors.messages import Command
from actors.runtime import Actor

pytestmark = pytest.mark.anyio


class Poison(Exception):
    pass


class Block(msgspec.Struct, frozen=True):
    """Hold the runtime's thread until ``release`` is set (a handler that takes its time)."""

    release: Any  # threading.Event


class Signal(msgspec.Struct, frozen=True):
    """Set ``event`` when handled (an anyio.Event set on the loop, or a threading.Event)."""

    event: Any


class Recorder(Actor):
    """Records what it handles, on which thread, and in which batches; raises on "poison"."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.seen: list[Any] = []
        self.threads: set[int] = set()
        self.batches: list[int] = []
        self.restarts = 0
        self.busy = 0
        self.overlaps = 0

    def _receive_batch(self, batch: list[Any]) -> None:
        self.batches.append(len(batch))
        super()._receive_batch(batch)

    def _receive(self, message: Any) -> Any:
        self.busy += 1
        try:
            if self.busy > 1:
                self.overlaps += 1
            self.threads.add(threading.get_ident())
            if message == "poison":
                raise Poison("bad message")
            if isinstance(message, Block):
                message.release.wait(10)
            elif isinstance(message, Signal):
                message.event.set()
            else:
                self.seen.append(message)
            return ("handled", message)
        finally:
            self.busy -= 1

    def _restarted(self) -> None:
        self.restarts += 1


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem() as system:
        yield system


def recorder(system: ActorSystem) -> Recorder:
    actor = system.attach_actor(Recorder)
    assert isinstance(actor, Recorder)
    return actor


async def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Poll an observable condition on the loop, with a generous deadline."""
    with anyio.fail_after(deadline):
        while not condition():
            await anyio.sleep(0.001)


# -- mailbox -------------------------------------------------------------------------------


async def test_tells_are_handled_in_order_and_a_burst_is_one_batch(system: ActorSystem) -> None:
    actor = recorder(system)
    done = anyio.Event()
    for index in range(100):
        actor.tell(index)
    actor.tell(Signal(done))
    await done.wait()
    assert actor.seen == list(range(100))
    assert actor.batches == [101]  # one wake-up for the whole burst
    assert actor.threads == {threading.get_ident()}


async def test_an_idle_actor_holds_no_task(system: ActorSystem) -> None:
    before = len(asyncio.all_tasks())
    actors = [recorder(system) for _ in range(100)]
    for actor in actors:
        actor.tell("hello")
    done = anyio.Event()
    actors[-1].tell(Signal(done))
    await done.wait()
    assert all(actor.seen == ["hello"] for actor in actors)
    assert len(asyncio.all_tasks()) == before


# -- asks on the loop thread ---------------------------------------------------------------


async def test_sync_ask_on_the_loop_thread_is_inline_and_never_blocks(system: ActorSystem) -> None:
    actor = recorder(system)
    other_ran = False

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    async with anyio.create_task_group() as group:
        group.start_soon(other)
        actor.tell("first")
        # A blocking wait here would deadlock the loop; the ask drains the actor right here,
        # without yielding (the task started above has not run yet).
        assert actor.ask("second") == ("handled", "second")
        assert not other_ran
        assert actor.seen == ["first", "second"]
    assert other_ran
    assert actor.threads == {threading.get_ident()}


async def test_async_ask_on_the_loop_thread_is_inline(system: ActorSystem) -> None:
    actor = recorder(system)
    actor.tell("first")
    assert await actor.ask_async("second") == ("handled", "second")
    assert actor.seen == ["first", "second"]


# -- asks from elsewhere -------------------------------------------------------------------


async def test_asks_from_many_threads_are_answered_on_the_loop_thread_one_at_a_time(
    system: ActorSystem,
) -> None:
    actor = recorder(system)
    answers: dict[int, list[Any]] = {}

    def worker(number: int) -> None:
        answers[number] = [actor.ask((number, index)) for index in range(200)]

    async with anyio.create_task_group() as group:
        for number in range(8):
            group.start_soon(anyio.to_thread.run_sync, worker, number)
    for number in range(8):
        assert answers[number] == [("handled", (number, index)) for index in range(200)]
    assert len(actor.seen) == 1600
    # Per-sender order is kept.
    for number in range(8):
        mine = [index for sender, index in actor.seen if sender == number]
        assert mine == list(range(200))
    assert actor.threads == {threading.get_ident()}
    assert actor.overlaps == 0


async def test_async_ask_from_another_loop(system: ActorSystem) -> None:
    actor = recorder(system)

    async def elsewhere() -> Any:
        return await actor.ask_async("from afar")

    answer = await anyio.to_thread.run_sync(asyncio.run, elsewhere())
    assert answer == ("handled", "from afar")
    assert actor.threads == {threading.get_ident()}


# -- supervision ---------------------------------------------------------------------------


async def test_a_crashing_handler_is_contained_and_the_actor_keeps_its_state(
    system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    actor = recorder(system)
    actor.tell("before")
    with caplog.at_level(logging.ERROR, logger="actors.runtime"):
        with pytest.raises(ActorCrashedError) as caught:
            actor.ask("poison")
        assert isinstance(caught.value.__cause__, Poison)
        assert actor.restarts == 1
        assert actor.ask("after") == ("handled", "after")
        # A told poison message crashes nobody either; the next message is handled.
        actor.tell("poison")
        assert await actor.ask_async("later") == ("handled", "later")
    assert actor.seen == ["before", "after", "later"]
    assert actor.restarts == 2
    assert sum("restarting with its state intact" in r.getMessage() for r in caplog.records) == 2


async def test_a_crash_is_reported_to_an_asker_on_another_thread(system: ActorSystem) -> None:
    actor = recorder(system)

    def ask_poison() -> BaseException | None:
        try:
            actor.ask("poison")
        except ActorCrashedError as exc:
            return exc
        return None

    error = await anyio.to_thread.run_sync(ask_poison)
    assert isinstance(error, ActorCrashedError)
    assert isinstance(error.__cause__, Poison)
    assert await anyio.to_thread.run_sync(actor.ask, "fine") == ("handled", "fine")


async def test_a_breaker_actor_survives_a_crashing_message(system: ActorSystem) -> None:
    class Bogus(Command, frozen=True):
        pass

    breaker = system.create_breaker("crash")
    breaker.call(lambda: 1)
    with pytest.raises(ActorCrashedError) as caught:
        breaker._actor.ask(Bogus())
    assert isinstance(caught.value.__cause__, TypeError)
    breaker.force_open()
    assert breaker.metrics.forced is True
    assert breaker.metrics.successful_calls == 1
    breaker.reset()
    assert breaker.call(lambda: 2) == 2


# -- answers nobody waits for --------------------------------------------------------------


def test_answer_to_a_cancelled_asker_goes_to_abandoned() -> None:
    """The asker is cancelled while the actor (on another thread) is still working."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ActorSystem()) as system,
    ):
        actor = recorder(system)
        abandoned: list[Any] = []

        async def scenario() -> None:
            release = threading.Event()
            task = asyncio.create_task(actor.ask_async(Block(release), abandoned=abandoned.append))
            await asyncio.sleep(0)  # the task posts its message and waits
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            with anyio.fail_after(10):
                while not abandoned:
                    await asyncio.sleep(0.001)

        asyncio.run(scenario())
        assert len(abandoned) == 1
        assert abandoned[0][0] == "handled"


def test_answer_that_arrives_just_before_the_cancel_goes_to_abandoned() -> None:
    """The answer is set on the asker's future, then the asker is cancelled before it runs
    again: the value must not vanish (it may be a half-open probe slot)."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ActorSystem()) as system,
    ):
        actor = recorder(system)
        abandoned: list[Any] = []

        async def scenario() -> None:
            task = asyncio.create_task(actor.ask_async("slot", abandoned=abandoned.append))
            await asyncio.sleep(0)  # the task posts "slot" and waits for the answer
            # Block this loop until the actor has answered: a message told after "slot" is
            # handled after the answer to "slot" was posted to this loop.
            answered = threading.Event()
            actor.tell(Signal(answered))
            assert answered.wait(10)
            # One turn of the loop: the answer resolves the future (the task is woken but
            # has not run), then this coroutine cancels the task.
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
        assert abandoned == [("handled", "slot")]


# -- closed and never-started systems ------------------------------------------------------


async def test_asks_after_shutdown_raise_and_tells_are_dropped() -> None:
    async with ActorSystem() as system:
        actor = recorder(system)
        actor.tell("drained at exit")
    assert actor.seen == ["drained at exit"]
    with pytest.raises(ActorSystemClosedError):
        actor.ask("late")
    with pytest.raises(ActorSystemClosedError):
        await actor.ask_async("late")
    with pytest.raises(ActorSystemClosedError):
        await anyio.to_thread.run_sync(actor.ask, "late")
    actor.tell("ignored")  # does not raise: a straggler after shutdown


def test_a_system_that_was_never_started_says_so() -> None:
    actor = recorder(ActorSystem(name="unstarted"))
    with pytest.raises(ActorSystemClosedError, match="not running"):
        actor.ask("hello")


async def test_a_system_starts_only_once() -> None:
    system = ActorSystem()
    async with system:
        pass
    with pytest.raises(RuntimeError, match="only be started once"):
        await system.start()
