"""The runtime works the same with and without ``sniffio`` importable.

anyio asks ``sniffio`` which async library runs, and ``sniffio`` answers from the *current
task*.  The runtime drains actors from plain loop callbacks (a break timer, a cross-thread
wake-up, the dispatch after a post), which have no current task; so with ``sniffio`` installed
any anyio call made from a drain raised ``NoEventLoopError`` (issue 11): an async subscriber
missed OPEN -> HALF_OPEN and ``ActorSystem.__aexit__`` waited forever for its delivery.

The suite itself runs with ``sniffio`` installed (the LLM SDKs bring it, as they do in users'
environments); one test here runs the same story in a subprocess where it cannot be imported.

These tests run their loop with plain ``asyncio.run``, not anyio's pytest runner: that runner
sets sniffio's context variable in the test's context, and a callback scheduled from the test
inherits it, which hid the bug from every test that used it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from actors import ActorSystem, CircuitState, StateChanged
from service.circuit_breaker import CircuitBreaker, CircuitBreakerConfig

ROOT = Path(__file__).resolve().parents[2]

# The story of the reproduction, run on real timers; it must print both transitions and
# then "exited".  Its deadline is generous: a hang is what it guards against.
STORY = textwrap.dedent(
    """
    import asyncio
    import anyio
    from actors import ActorSystem, StateChanged
    from service.circuit_breaker import CircuitBreaker, CircuitBreakerConfig

    async def bad():
        raise ValueError("x")

    async def main():
        seen = []
        half_open = asyncio.Event()

        async def on(event):
            seen.append((event.from_state.value, event.to_state.value))
            if event.to_state.value == "half_open":
                half_open.set()

        async with ActorSystem() as system:
            system.bus.subscribe(on, events=(StateChanged,))
            config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
            breaker = CircuitBreaker(config, name="s", system=system)
            try:
                await breaker.call_async(bad)
            except ValueError:
                pass
            await asyncio.wait_for(half_open.wait(), 10)
            print(seen)
        print("exited")

    asyncio.run(asyncio.wait_for(main(), 20))
    """
)


async def bad() -> None:
    raise ValueError("x")


def test_the_suite_runs_with_sniffio_installed() -> None:
    # Without it the tests below would pass on the broken runtime too.
    assert importlib.util.find_spec("sniffio") is not None


def test_an_async_subscriber_sees_the_timer_transition_and_the_system_exits() -> None:
    seen = asyncio.run(timer_story())
    assert seen == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
    ]


async def timer_story() -> list[tuple[CircuitState, CircuitState]]:
    seen: list[tuple[CircuitState, CircuitState]] = []
    half_open = anyio.Event()

    async def on(event: StateChanged) -> None:
        seen.append((event.from_state, event.to_state))
        if event.to_state is CircuitState.HALF_OPEN:
            half_open.set()

    with anyio.fail_after(10):  # the old runtime hung in __aexit__
        async with ActorSystem() as system:
            system.bus.subscribe(on, events=(StateChanged,))
            config = CircuitBreakerConfig(failure_threshold=1, timeout_duration=0.05)
            breaker = CircuitBreaker(config, name="s", system=system)
            with pytest.raises(ValueError):
                await breaker.call_async(bad)
            # The OPEN -> HALF_OPEN change comes from the break timer, a loop callback.
            await half_open.wait()
    return seen


def test_a_change_made_from_another_thread_reaches_an_async_subscriber() -> None:
    """A sync caller on a worker thread: its failure is handled in a drain that the loop runs
    from ``call_soon_threadsafe``, another callback without a task."""
    asyncio.run(cross_thread_story())


async def cross_thread_story() -> None:
    opened = anyio.Event()

    async def on(event: StateChanged) -> None:
        if event.to_state is CircuitState.OPEN:
            opened.set()

    def trip(breaker: CircuitBreaker) -> None:
        def fail() -> None:
            raise ValueError("x")

        with pytest.raises(ValueError):
            breaker.call(fail)

    with anyio.fail_after(10):
        async with ActorSystem() as system:
            system.bus.subscribe(on, events=(StateChanged,))
            breaker = CircuitBreaker(
                CircuitBreakerConfig(failure_threshold=1), name="t", system=system
            )
            await anyio.to_thread.run_sync(trip, breaker)
            await opened.wait()


def _anyio_runs_without_sniffio() -> bool:
    """anyio required sniffio up to 4.11; from 4.12 on it is optional."""
    requirements = importlib.metadata.requires("anyio") or []
    return not any(requirement.startswith("sniffio") for requirement in requirements)


# Where anyio itself requires sniffio, an environment without it cannot exist.
ENVIRONMENTS = ["importable", "blocked"] if _anyio_runs_without_sniffio() else ["importable"]


@pytest.mark.parametrize("sniffio", ENVIRONMENTS)
def test_the_story_runs_in_a_fresh_process(sniffio: str) -> None:
    # ``sys.modules["sniffio"] = None`` makes ``import sniffio`` fail, as if it were absent.
    prelude = "import sys; sys.modules['sniffio'] = None\n" if sniffio == "blocked" else ""
    done = subprocess.run(
        [sys.executable, "-c", prelude + STORY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[('closed', 'open'), ('open', 'half_open')]",
        "exited",
    ], done.stderr
    assert "NoEventLoopError" not in done.stderr
