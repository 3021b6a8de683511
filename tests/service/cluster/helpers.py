"""Shared helpers for the cluster tests: polling with a deadline, Redis servers, key checks."""

from __future__ import annotations

import contextlib
import inspect
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import redis

from actors.breaker import Breaker
from actors.errors import CircuitBreakerOpenError

MAIN_URL = "redis://127.0.0.1:6379/0"


class Boom(RuntimeError):
    """The failure the guarded functions raise."""


async def boom() -> None:
    raise Boom("upstream down")


async def ok() -> str:
    return "ok"


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` (sync or async) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or condition!r}")
        await anyio.sleep(0.005)


async def fail(breaker: Breaker, times: int) -> None:
    """Make ``times`` failing calls through ``breaker`` (rejections count as done)."""
    for _ in range(times):
        with contextlib.suppress(Boom, CircuitBreakerOpenError):
            await breaker.call_async(boom)


def keys_without_ttl(client: redis.Redis, namespace: str) -> list[str]:
    """Keys of ``namespace`` that would never expire."""
    return [
        key
        for key in client.scan_iter(match=f"{namespace}:*", count=1000)
        if client.pttl(key) == -1
    ]


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private ``redis-server`` on loopback that a test may stop, pause and restart (on the
    same port), without persistence: a restart comes back empty."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (the cluster tests need it)")
        self._binary = binary
        self._directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._process is None, "already running"
        # The port may be taken by a lingering socket for a moment after a stop: retry.
        deadline = time.monotonic() + 10
        while True:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self._directory),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready(deadline):
                return
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _wait_ready(self, deadline: float) -> bool:
        assert self._process is not None
        with redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2) as probe:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False  # exited (port busy?)
                try:
                    if probe.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.01)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGCONT)  # in case it was paused
            process.terminate()
            process.wait(10)

    def pause(self) -> None:
        """Freeze the server: connections stay open, nothing is answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)
