"""``breakerd`` against the in-process service: every subcommand, run as a real process.

The CLI runs as ``python -m service ...`` with the venv's interpreter (what the console script
runs), so the service keeps its event loop to itself while the command blocks.  ``watch`` runs
under a real pseudo-terminal.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from service.circuit_breaker import remove_circuit_breaker
from service.cli import apply_event, row, table
from service.config import parse_config
from service.lifecycle import Service
from tests.service.http.conftest import TOKEN, config_text, serving

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
_tags = itertools.count()


def environ(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BREAKERD_") and not key.endswith("_API_KEY")
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


async def breakerd(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run the command to completion (stdout piped: not a terminal)."""
    return await anyio.run_process(
        [sys.executable, "-m", "service", *args], cwd=ROOT, env=environ(**env), check=False
    )


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode()


@pytest.fixture
async def running() -> AsyncIterator[tuple[Service, str]]:
    tag = f"cli{next(_tags)}x"
    config = parse_config(config_text(tag, timeout_duration=30.0), environ={})
    try:
        async with serving(config, {"BREAKERD_ADMIN_TOKEN": TOKEN}) as service:
            yield service, tag
    finally:
        # The registry is process-wide: left open, they would degrade later tests' health.
        for provider in config.providers:
            remove_circuit_breaker(f"{provider}_client")


async def test_status_prints_a_plain_table_when_piped_and_json_on_request(
    running: tuple[Service, str],
) -> None:
    service, tag = running
    result = await breakerd("status", "--url", service.url)
    assert result.returncode == 0, err(result)
    text = out(result)
    assert not ANSI.search(text)  # piped: no colour codes
    header = next(line for line in text.splitlines() if "failure rate" in line)
    assert header.split() == [
        "name", "state", "forced", "failure", "rate", "calls", "rejections", "p99", "retry", "in"
    ]  # fmt: skip
    line = next(line for line in text.splitlines() if f"{tag}a_client" in line)
    assert line.split() == [f"{tag}a_client", "CLOSED", "no", "0.0%", "0", "0", "-", "-"]

    result = await breakerd("status", "--json", BREAKERD_URL=service.url)
    assert result.returncode == 0, err(result)
    body = json.loads(out(result))
    assert body["breakers"][f"{tag}a_client"]["state"] == "closed"


async def test_status_is_coloured_on_a_terminal(running: tuple[Service, str]) -> None:
    service, tag = running
    text = await under_terminal(["status"], service.url, until=f"{tag}b_client")
    assert ANSI.search(text)
    assert f"{tag}b_client" in ANSI.sub("", text)


async def test_unreachable_exits_1_naming_the_url() -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing listens there
    result = await breakerd("status", "--url", url)
    assert result.returncode == 1
    assert f"cannot reach breakerd at {url}" in err(result)


async def test_open_close_reset_with_the_token_from_the_environment_or_a_file(
    running: tuple[Service, str], tmp_path: Path
) -> None:
    service, tag = running
    name = f"{tag}a_client"
    result = await breakerd("open", name, "--url", service.url, BREAKERD_ADMIN_TOKEN=TOKEN)
    assert (result.returncode, out(result)) == (0, f"{name}: OPEN (forced)\n"), err(result)
    assert TOKEN not in out(result) + err(result)
    assert (await service_snapshot(service, name))["forced"] is True

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = await breakerd("close", name, "--url", service.url, "--token-file", str(token_file))
    assert (result.returncode, out(result)) == (0, f"{name}: CLOSED (forced)\n"), err(result)

    result = await breakerd("reset", name, "--url", service.url, BREAKERD_ADMIN_TOKEN=TOKEN)
    assert (result.returncode, out(result)) == (0, f"{name}: CLOSED\n"), err(result)
    assert (await service_snapshot(service, name))["forced"] is False

    await open_by_failures(service, name)
    result = await breakerd("reset", "--all", "--url", service.url, BREAKERD_ADMIN_TOKEN=TOKEN)
    assert result.returncode == 0, err(result)
    assert re.fullmatch(r"reset \d+ breakers\n", out(result))
    assert (await service_snapshot(service, name))["state"] == "closed"


async def test_exit_codes_for_unknown_breakers_and_token_problems(
    running: tuple[Service, str], tmp_path: Path
) -> None:
    service, _ = running
    url = ("--url", service.url)
    result = await breakerd("open", "no-such-breaker", *url, BREAKERD_ADMIN_TOKEN=TOKEN)
    assert result.returncode == 3
    assert "no circuit breaker named 'no-such-breaker'" in err(result)

    result = await breakerd("open", "anything", *url)  # no token at all
    assert result.returncode == 2
    assert "BREAKERD_ADMIN_TOKEN" in err(result) and "--token-file" in err(result)

    result = await breakerd("reset", "--all", *url, BREAKERD_ADMIN_TOKEN="wrong-token")
    assert result.returncode == 2
    assert "401" in err(result) and "wrong-token" not in err(result)

    result = await breakerd("open", "x", *url, "--token-file", str(tmp_path / "missing"))
    assert result.returncode == 2 and "--token-file" in err(result)

    result = await breakerd("reset", *url, BREAKERD_ADMIN_TOKEN=TOKEN)
    assert result.returncode == 2 and "needs a breaker NAME or --all" in err(result)

    result = await breakerd("status", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in err(result)


async def test_config_check_and_show(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(config_text("cfg"))
    result = await breakerd("config", "check", str(good))
    assert result.returncode == 0, err(result)
    assert out(result) == f"{good}: ok (3 providers, 3 routes, 1 breaker tables)\n"

    bad = tmp_path / "bad.toml"
    bad.write_text(config_text("cfg").replace("failure_threshold = 2", "failure_threshold = 0"))
    result = await breakerd("config", "check", str(bad))
    assert result.returncode == 2
    assert "breakers.default.failure_threshold" in err(result)
    assert str(bad) in err(result)

    result = await breakerd("config", "check", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "missing.toml" in err(result)

    secret = "sk-do-not-print-me"
    result = await breakerd(
        "config", "show", "--config", str(good), OPENAI_API_KEY=secret, BREAKERD_ADMIN_TOKEN=TOKEN
    )
    assert result.returncode == 0, err(result)
    shown = json.loads(out(result))
    assert shown["providers"]["cfga"]["model"] == "model-a"
    assert shown["secrets"]["OPENAI_API_KEY"] == "set"
    assert shown["secrets"]["ANTHROPIC_API_KEY"] == "unset"
    assert shown["secrets"]["BREAKERD_ADMIN_TOKEN"] == "set"
    assert secret not in out(result) and TOKEN not in out(result)


async def test_serve_is_the_default_and_simulate_and_demo_run() -> None:
    for args in (["--help"], ["serve", "--help"]):
        result = await breakerd(*args)
        assert result.returncode == 0, err(result)
    assert "status" in out(await breakerd("--help"))
    result = await breakerd("--port", "not-a-number")
    assert result.returncode == 2 and "--port" in err(result)  # the service's own parser
    result = await breakerd("serve", "--config", "/nonexistent.toml")
    assert result.returncode == 2 and "/nonexistent.toml" in err(result)

    result = await breakerd("simulate", "--help")
    assert result.returncode == 0 and "--latency" in out(result)
    result = await breakerd("demo", "--help")
    assert result.returncode == 0 and "--quick" in out(result)


async def test_simulate_serves_until_interrupted() -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "service", "simulate", "--port", "0"], cwd=ROOT, env=environ()
    )
    async with process:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(10):
            async for chunk in process.stderr:
                seen += chunk
                if b"upstream simulator listening" in seen:
                    break
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            assert await process.wait() == 0


async def test_watch_shows_open_within_two_seconds_of_an_outage_and_exits_0_on_ctrl_c(
    running: tuple[Service, str],
) -> None:
    service, tag = running
    name = f"{tag}a_client"
    watch = Terminal(["watch", "--url", service.url])
    try:
        await watch.read_until("breakers (live; Ctrl-C to quit)")  # subscribed and drawn
        simulator = service.simulator
        assert simulator is not None
        simulator.control(api="openai", outage=True)
        started = time.monotonic()
        await open_by_failures(service, name)
        text = await watch.read_until(f"{name}  CLOSED -> OPEN", timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert "(failure_threshold)" in ANSI.sub("", text)
        assert watch.process.poll() is None
        watch.process.send_signal(signal.SIGINT)
        assert await watch.wait() == 0
    finally:
        watch.close()


# -- helpers ----------------------------------------------------------------------------------


class Terminal:
    """The command with a pseudo-terminal for stdin, stdout and stderr."""

    def __init__(self, args: list[str], columns: int = 160) -> None:
        self.master, slave = pty.openpty()
        env = environ(COLUMNS=str(columns), LINES="50", TERM="xterm-256color")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
        os.close(slave)
        self.output = b""

    async def read_until(self, text: str, timeout: float = 10.0) -> str:
        """All output so far, once ``text`` appears in it (colour codes aside)."""
        with anyio.fail_after(timeout):
            while text not in ANSI.sub("", self.output.decode(errors="replace")):
                await anyio.wait_readable(self.master)
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    await anyio.sleep(0.01)
        return self.output.decode(errors="replace")

    async def wait(self, timeout: float = 10.0) -> int:
        """The exit status, reading the output meanwhile: a full terminal would block the
        command's last writes (and with them its exit)."""
        with anyio.fail_after(timeout):
            while (code := self.process.poll()) is None:
                with anyio.move_on_after(0.05):
                    await anyio.wait_readable(self.master)
                    try:
                        self.output += os.read(self.master, 65536)
                    except OSError:  # the child closed the terminal
                        await anyio.sleep(0.01)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


async def under_terminal(args: list[str], url: str, *, until: str) -> str:
    terminal = Terminal([*args, "--url", url])
    try:
        text = await terminal.read_until(until)
        code = await terminal.wait()
        assert code == 0, text
        return text
    finally:
        terminal.close()


async def service_snapshot(service: Service, name: str) -> dict[str, object]:
    from actors.system import default_system

    snapshot = await default_system().breakers()[name].metrics_async()
    return dict(snapshot.to_dict())


async def open_by_failures(service: Service, name: str) -> None:
    """Two failed calls through the gateway (failure_threshold = 2) on the ``solo`` route."""
    import aiohttp

    simulator = service.simulator
    assert simulator is not None
    simulator.control(api="openai", outage=True)
    body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(f"{service.url}/v1/chat/completions", json=body) as response:
                assert response.status == 502
    simulator.control(api="openai", reset=True)
    assert (await service_snapshot(service, name))["state"] == "open"


def test_a_row_shows_forced_open_as_never_retrying() -> None:
    snapshot = {
        "name": "n",
        "state": "open",
        "forced": True,
        "failure_rate": 0.25,
        "total_calls": 8,
        "rejected_calls": 3,
        "duration_p99": 0.0123,
        "retry_after": None,
    }
    assert row(snapshot) == ("n", "OPEN", "yes", "25.0%", "8", "3", "12 ms", "never")
    assert row({**snapshot, "forced": False, "retry_after": 4.25})[-1] == "4.2s"


def test_the_live_table_fits_the_terminal_open_breakers_first() -> None:
    from rich.console import Console

    breakers = {f"b{i:02d}": {"name": f"b{i:02d}", "state": "closed"} for i in range(30)}
    breakers["b17"] = {"name": "b17", "state": "open", "retry_after": 3.0}
    console = Console(width=120, no_color=True)
    with console.capture() as captured:
        console.print(table(breakers, "t", limit=5))
    lines = [line.split()[0] for line in captured.get().splitlines()[4:] if line.strip()]
    assert lines == ["b17", "b00", "b01", "b02", "..."]
    assert "... 26 more" in captured.get()


def test_the_live_view_counts_the_break_down_between_snapshots() -> None:
    breakers: dict[str, dict[str, object]] = {}
    snapshot = {"name": "n", "state": "open", "forced": False, "retry_after": 10.0}
    apply_event(breakers, "metrics", {"breakers": {"n": snapshot}}, now=100.0)
    assert row(breakers["n"], now=100.0)[-1] == "10.0s"
    assert row(breakers["n"], now=103.5)[-1] == "6.5s"
    assert row(breakers["n"], now=200.0)[-1] == "0.0s"
    line = apply_event(
        breakers,
        "state_changed",
        {
            "breaker": "n",
            "at": 0.0,
            "from_state": "open",
            "to_state": "half_open",
            "reason": "timeout_elapsed",
            "forced": False,
            "consecutive_failures": 2,
            "total_calls": 9,
        },
        now=110.0,
    )
    assert line is not None and line.endswith("n  OPEN -> HALF-OPEN  (timeout_elapsed)")
    assert row(breakers["n"], now=110.0)[1:] == (
        "HALF-OPEN", "no", "0.0%", "9", "0", "-", "-"
    )  # fmt: skip
