"""The wheel, installed into a fresh venv outside the checkout, works as a user would use it.

Builds the wheel from this checkout, installs it with the ``service`` and ``otel`` extras
(dependencies from the package index) plus mypy into a new venv under the test's temporary
directory (no system site packages, not the checkout on ``sys.path``), then:

- ``mypy --strict`` passes on a small program importing the public API (``py.typed`` ships);
- ``breakerd --version`` prints the version;
- ``python -m service`` serves: ``/readyz`` answers 200 within seconds, SIGTERM exits 0;
- the README's first library example runs.

About a minute (venv creation and the install from the package index), so it is not part of
``make test``: its name does not match ``test_*.py``, so the suite never collects it, and
``make wheel-test`` (its own step in ``.ci/run``) names the file explicitly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).parents[2]

USER_PROGRAM = """
from __future__ import annotations

import asyncio

from service.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    circuit_breaker,
)
from service.monitor import get_circuit_breaker_monitor

breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=2), "typed")


@circuit_breaker(name="typed_decorated")
async def fetch(url: str) -> bytes:
    return url.encode()


async def main() -> int:
    body: bytes = await fetch("x")
    state: CircuitState = breaker.state
    try:
        value: int = await breaker.call_async(asyncio.sleep, 0, 42)
    except CircuitBreakerOpenError as exc:
        retry: float = exc.retry_after
        return int(retry)
    summary = await get_circuit_breaker_monitor().get_health_summary_async()
    return value + len(body) + len(summary) + (state is CircuitState.CLOSED)
"""

CONFIG = """
[service]
port = 0
[simulator]
mode = "on"
latency = 0.0
"""


def run(*args: str | Path, cwd: Path, timeout: float = 300, **kwargs: object) -> str:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


def readme_example() -> str:
    """The README's first ``python`` block (the library quick start)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match is not None
    return match[1]


RUN_EXAMPLE = """
import ast, asyncio, sys
source = open(sys.argv[1], encoding="utf-8").read()
code = compile(source, "README example", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
async def main():
    result = eval(code, {"__name__": "__readme__"})
    if result is not None:
        await result
asyncio.run(main())
print("example ran")
"""


def test_the_wheel_installs_outside_the_checkout_and_works(tmp_path: Path) -> None:
    clean_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIRTUAL_ENV", "PYTHON", "BREAKERD_", "OTEL_"))
        and key not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    }
    started = time.monotonic()
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT, cwd=tmp_path)
    (wheel,) = dist.glob("breakerd-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    run(python, "-m", "pip", "install", "-q", f"{wheel}[service,otel]", "mypy", cwd=tmp_path)
    installed = time.monotonic() - started

    # The checkout is nowhere on the path: the installed package is what runs.
    where = run(python, "-c", "import service; print(service.__file__)", cwd=tmp_path)
    assert str(venv) in where and str(ROOT) not in where

    program = tmp_path / "user_program.py"
    program.write_text(USER_PROGRAM, encoding="utf-8")
    run(python, "-m", "mypy", "--strict", "--no-incremental", program, cwd=tmp_path)

    version = run(bin_dir / "breakerd", "--version", cwd=tmp_path, env=clean_env)
    assert version.strip() == "breakerd 0.1.0"

    example = tmp_path / "readme_example.py"
    example.write_text(readme_example(), encoding="utf-8")
    runner = tmp_path / "run_example.py"
    runner.write_text(RUN_EXAMPLE, encoding="utf-8")
    assert "example ran" in run(python, runner, example, cwd=tmp_path, env=clean_env)

    config = tmp_path / "breakerd.toml"
    config.write_text(CONFIG, encoding="utf-8")
    serve_and_stop(python, config, tmp_path, clean_env)
    print(f"wheel built and installed in {installed:.1f}s")


def serve_and_stop(python: Path, config: Path, cwd: Path, env: dict[str, str]) -> None:
    """``python -m service``: ready within seconds, then SIGTERM -> exit 0."""
    process = subprocess.Popen(
        [str(python), "-m", "service", "--config", str(config), "--log-format", "json"],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, f"the service exited early with {process.wait()}"
            record = json.loads(line)  # every line is one JSON object
            found = re.search(r"listening on (http://\S+)", record["message"])
            url = found[1] if found else None
        assert url is not None
        ready_by = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < ready_by, "/readyz never answered 200"
                time.sleep(0.05)
        # The installed command talks to it, and the dashboard's files are in the wheel.
        status = run(python.parent / "breakerd", "status", "--url", url, cwd=cwd, env=env)
        assert f"breakerd at {url}" in status and "retry in" in status, status
        with urllib.request.urlopen(f"{url}/dashboard/app.js", timeout=5) as answer:
            assert answer.status == 200 and b"EventSource" in answer.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
