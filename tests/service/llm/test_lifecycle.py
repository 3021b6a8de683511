"""Sessions, the sync facade and closing: nothing leaks, nothing blocks a running loop."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import warnings
from collections.abc import Callable

import aiohttp
import anyio
import anyio.to_thread
import pytest

from actors import ActorSystem
from service.llm_client import LLMClient, get_llm_client
from tests.service.llm.fake_provider import FakeProvider, Fault, fake_provider_in_thread
from tests.service.llm.helpers import HELLO, KEY, client_for


def leaks(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def facade_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("llm-client-")}


async def wait_for(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.002)


def test_the_leak_check_sees_an_unclosed_session() -> None:
    # The check below must be able to fail: an aiohttp session left open is reported.
    async def leak() -> None:
        aiohttp.ClientSession()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(leak())
        gc.collect()
    assert any("Unclosed client session" in text for text in leaks(caught))


def test_loops_that_end_sync_calls_and_a_dropped_client_leave_nothing_unclosed() -> None:
    before = facade_threads()
    with fake_provider_in_thread() as fake, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = get_llm_client("openai", False, api_key=KEY, base_url=fake.openai_base_url)
        asyncio.run(client.complete_async(HELLO))  # a session per loop, closed as it ends
        asyncio.run(client.complete_async(HELLO))
        client.complete(HELLO)  # the facade's own loop
        assert len(facade_threads() - before) == 1
        del client  # never closed: the finalizer stops the facade and its session
        gc.collect()
        assert facade_threads() - before == set()
    assert leaks(caught) == []
    assert fake.count == 3


def test_close_is_idempotent_and_a_closed_client_refuses_sync_calls() -> None:
    with fake_provider_in_thread() as fake:
        client = get_llm_client("openai", False, api_key=KEY, base_url=fake.openai_base_url)
        client.complete(HELLO)
        client.close()
        client.close()
        assert client.closed
        with pytest.raises(RuntimeError, match="closed"):
            client.complete(HELLO)
    assert fake.count == 1


@pytest.mark.anyio
async def test_the_sync_facade_works_from_a_worker_thread_and_aclose_stops_it(
    fake: FakeProvider, system: ActorSystem
) -> None:
    before = facade_threads()
    client = client_for("openai", fake, system)
    response = await anyio.to_thread.run_sync(functools.partial(client.complete, HELLO))
    assert response.content == "Hello from the fake provider"
    assert len(facade_threads() - before) == 1
    await client.aclose()
    assert facade_threads() - before == set()


@pytest.mark.anyio
async def test_the_sync_facade_refuses_to_block_a_running_loop(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system) as client:
        with pytest.raises(RuntimeError, match=r"await complete_async"):
            client.complete(HELLO)
    assert fake.count == 0


@pytest.mark.anyio
async def test_one_session_per_loop_reuses_its_connection(
    fake: FakeProvider, system: ActorSystem
) -> None:
    async with client_for("openai", fake, system) as client:
        await client.complete_async(HELLO)
        await client.complete_async(HELLO)
        assert "sessions=1" in repr(client)
    assert "sessions=0" in repr(client)
    assert fake.requests[0].client_port == fake.requests[1].client_port


@pytest.mark.anyio
async def test_a_closed_client_refuses_async_calls(fake: FakeProvider, system: ActorSystem) -> None:
    client = client_for("openai", fake, system)
    await client.complete_async(HELLO)
    await client.aclose()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.complete_async(HELLO)
    assert fake.count == 1


@pytest.mark.anyio
async def test_the_connection_pool_is_bounded(fake: FakeProvider, system: ActorSystem) -> None:
    fake.inject(Fault.hang(), times=3)
    async with (
        client_for("openai", fake, system, max_connections=2) as client,
        anyio.create_task_group() as group,
    ):
        for _ in range(3):
            group.start_soon(functools.partial(client.complete_async, HELLO))
        await wait_for(lambda: fake.count == 2)
        await anyio.wait_all_tasks_blocked()
        assert fake.count == 2  # the third call waits for a pooled connection
        fake.release()
    assert (fake.count, fake.max_in_flight) == (3, 2)


def test_every_async_method_has_a_sync_twin() -> None:
    public = {name for name in dir(LLMClient) if not name.startswith("_")}
    asynchronous = {name for name in public if name.endswith("_async")}
    # A stream has no sync twin: iterate it with `async for`.
    missing = {name for name in asynchronous if name.removesuffix("_async") not in public}
    assert missing == {"stream_async"}
    assert {"aclose", "close", "__aenter__", "__enter__"} <= set(dir(LLMClient))
