"""The service's log lines: the access log, transitions, JSON lines, and no secret anywhere."""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import math
import random
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
from aiohttp.test_utils import make_mocked_request

from service.config import parse_config
from service.gateway_auth import digest, key_id
from service.lifecycle import Service
from service.logs import (
    ACCESS_MESSAGE,
    FIELDS,
    JsonFormatter,
    LogFormat,
    RequestInfo,
    TextFormatter,
    _access_record,
    _log_access,
    _text_value,
    access_logger,
    breaker_outcome,
    configure_logging,
)
from service.simulator import Simulator
from tests.service.http.conftest import TOKEN, serving, wait_for
from tests.service.ops.test_gateway_keys import config_text, simulator

pytestmark = pytest.mark.anyio

__all__ = ["simulator"]  # a fixture

PROVIDER_KEY = "sk-provider-secret-0a9f7e"
CLIENT_KEY = "bk-client-secret-55c1d0"
SECRETS = (PROVIDER_KEY, CLIENT_KEY, TOKEN)

BREAKERS = """
[breakers.default]
failure_threshold = 2
success_threshold = 1
timeout_duration = 0.2
"""


def fields(record: logging.LogRecord) -> dict[str, object]:
    return dict(getattr(record, FIELDS, {}))


@pytest.fixture
async def logged(
    tag: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Service]:
    """A service with a provider key, a client key and the admin token, logging at DEBUG."""
    caplog.set_level(logging.DEBUG)
    text = config_text(tag, simulator, 'api_keys_env = "H6_CLIENT_KEYS"') + BREAKERS
    environ = {
        "H6_PROVIDER_KEY": PROVIDER_KEY,
        "H6_CLIENT_KEYS": CLIENT_KEY,
        "BREAKERD_ADMIN_TOKEN": TOKEN,
    }
    async with serving(parse_config(text, environ={}), environ) as service:
        yield service


async def chat(http: aiohttp.ClientSession, url: str, key: str = CLIENT_KEY) -> int:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        await response.read()
        return response.status


async def test_an_outage_cycle_as_the_log_tells_it(
    logged: Service, simulator: Simulator, tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = logged.url
    async with aiohttp.ClientSession() as http:
        assert await chat(http, url) == 200
        simulator.control(api="openai", outage=True)
        assert [await chat(http, url) for _ in range(3)] == [502, 502, 503]
        simulator.control(api="openai", outage=False)

        async def recovered() -> bool:
            return await chat(http, url) == 200

        await wait_for(recovered)
        assert await chat(http, url, key="bk-not-a-key") == 401
        for path in ("/livez", "/readyz", "/health", "/metrics"):
            async with http.get(f"{url}{path}") as response:
                assert response.status == 200

    access = [fields(r) for r in caplog.records if r.name == "service.access"]
    assert all(line["path"] == "/v1/chat/completions" for line in access)  # no probe lines
    first, failed, rejected = access[0], access[1], access[3]
    client = key_id(digest(CLIENT_KEY))
    assert first == {
        "event": "access",
        "method": "POST",
        "path": "/v1/chat/completions",
        "route": "gpt",
        "provider": f"{tag}o",
        "status": 200,
        "duration_ms": first["duration_ms"],
        "fallback": False,
        "breaker_outcome": "success",
        "client": client,
    }
    assert (failed["status"], failed["breaker_outcome"]) == (502, "failure")
    assert (rejected["status"], rejected["breaker_outcome"]) == (503, "rejected")
    assert (access[-1]["status"], access[-1]["client"]) == (401, None)

    transitions = [r for r in caplog.records if r.name == "service.breakers"]
    opened = next(r for r in transitions if fields(r)["to_state"] == "open")
    assert opened.levelno == logging.WARNING
    assert fields(opened)["breaker"] == f"{tag}o_client"
    assert fields(opened)["reason"] == "failure_threshold"
    assert fields(opened)["consecutive_failures"] == 2
    assert 0 < float(str(fields(opened)["retry_in_s"])) <= 0.2
    assert "opened (failure_threshold): 2 consecutive failures" in opened.getMessage()
    closed = next(r for r in transitions if fields(r)["to_state"] == "closed")
    assert closed.levelno == logging.INFO

    # Every line, in both formats, at every level: no secret.
    for record in caplog.records:
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(record)
            for secret in SECRETS:
                assert secret not in line, (record.name, line)


def test_json_lines_have_stable_keys_and_one_object_per_line() -> None:
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "a\nb %d", (7,), None)
    setattr(record, FIELDS, {"event": "access", "status": 200, "route": "gpt"})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    decoded = json.loads(line)
    assert list(decoded) == ["time", "level", "logger", "message", "event", "status", "route"]
    assert decoded["message"] == "a\nb 7" and decoded["level"] == "INFO"
    head, _, rest = TextFormatter().format(record).partition("\n")
    assert head.endswith("INFO    service.access: a event=access status=200 route=gpt")
    assert rest == "b 7"  # the fields stay on the first line, above a traceback


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [(200, None, "success"), (503, "circuit_open", "rejected"), (502, "upstream_error", "failure"),
     (504, "upstream_timeout", "failure"), (429, "rate_limited", "not_counted"),
     (400, None, "not_counted"), (503, "provider_saturated", "not_counted")],
)  # fmt: skip
def test_breaker_outcome_from_the_answer(status: int, code: str | None, outcome: str) -> None:
    assert breaker_outcome(status, code) == outcome


async def test_probe_scrapes_are_logged_when_asked(
    tag: str, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "service.access")
    text = config_text(tag, simulator, "") + "[logging]\nprobe_access_log = true\n"
    environ = {"H6_PROVIDER_KEY": "k"}
    async with (
        serving(parse_config(text, environ={}), environ) as service,
        aiohttp.ClientSession() as http,
        http.get(f"{service.url}/readyz") as answer,
    ):
        assert answer.status == 200
    assert [fields(r)["path"] for r in caplog.records] == ["/readyz"]


# -- the access log's cost: the same bytes, one write per loop iteration -----------------------
#
# service.logs builds its lines itself (no generic Formatter steps, the time formatted once per
# second), builds the access record from a template and holds the lines of a loop iteration
# for one write.  These tests pin that the bytes are the old formatters' and that nothing is
# lost, reordered, torn, or held past an error.

_OLD_NEEDS_QUOTES = re.compile(r'[\s"]')


def old_text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return json.dumps(text) if not text or _OLD_NEEDS_QUOTES.search(text) else text


class OldJsonFormatter(logging.Formatter):
    """The JSON format as it was before the fast paths (the reference bytes)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        for key, value in (fields if isinstance(fields, Mapping) else {}).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class OldTextFormatter(logging.Formatter):
    """The text format as it was before the fast paths (the reference bytes)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, FIELDS, None)
        if not isinstance(fields, Mapping) or not fields:
            return text
        pairs = " ".join(f"{key}={old_text_value(value)}" for key, value in fields.items())
        head, newline, rest = text.partition("\n")
        return f"{head} {pairs}{newline}{rest}"


class Color(enum.Enum):
    RED = "red"


class Mode(enum.StrEnum):
    FAST = "fast path"


class Spaced:
    def __str__(self) -> str:
        return "a b"


def _error() -> Any:
    try:
        raise ValueError("boom")
    except ValueError:
        return sys.exc_info()


ACCESS_FIELDS: dict[str, Any] = {
    "event": "access", "method": "POST", "path": "/v1/chat/completions", "route": "gpt",
    "provider": "openai-main", "status": 200, "duration_ms": 12.34, "fallback": False,
    "breaker_outcome": "success", "client": "k_3f9a2c1b",
}  # fmt: skip
ODD_STRINGS = ["", "a b", 'say "hi"', "tab\there", "ünïcödé", "nb\xa0sp", "ls\u2028x", "nul\x00",
               "😀", "zw\u200bsp", "-", "ctl\x7f", "\\back", "\ud800"]  # fmt: skip
ODD_VALUES: list[Any] = [
    None, 0, -1, 10**30, 1.5, -0.0, 1e16, 1e-7, math.nan, math.inf, -math.inf, True, False,
    [1, "a b"], {"k": None}, (), Spaced(), Color.RED, Mode.FAST, HTTPStatus.OK, b"by tes",
    datetime(2024, 1, 2, 3, 4, 5), 2.5j, *ODD_STRINGS,
]  # fmt: skip

# (name, level, message, args, fields, exc_info, stack_info)
Spec = tuple[str, int, str, Any, Any, Any, "str | None"]
SPECS: list[Spec] = [
    ("service.access", logging.INFO, "%s %s %d %.1fms", ("POST", "/v1/x", 200, 12.34),
     ACCESS_FIELDS, None, None),
    ("service.access", logging.INFO, "a\nb %d", (7,), {"event": "access"}, None, None),
    ("service.breakers", logging.WARNING, "opened", (), {"retry_in_s": None}, None, None),
    ("x", logging.ERROR, "failed", (), {"event": "x", "n": 1}, _error(), None),
    ("x", logging.ERROR, "failed", (), {}, _error(), None),
    ("x", logging.INFO, "stack", (), {"n": 1}, None, "Stack (most recent call last):\n  here"),
    ("x", logging.DEBUG, "no fields", (), None, None, None),
    ("x", logging.DEBUG, "empty fields", (), {}, None, None),
    ("x", logging.DEBUG, "not a mapping", (), ["a", "b"], None, None),
    ("x", 25, "a level without a name", (), {"n": 1}, None, None),
    ("odd\nname", logging.INFO, "m", (), {"n": 1}, None, None),
    ("x", logging.INFO, "%(a)s and %(b)s", ({"a": 1, "b": "two"},), {"n": 1}, None, None),
    ("x", logging.INFO, "reserved", (),
     {"time": "t", "level": "l", "logger": "g", "message": "m", "exception": "e", "n": 1},
     None, None),
    ("x", logging.INFO, "keys", (), {5: "int key", None: 1, True: 2, 1.5: 3}, None, None),
    ("x", logging.INFO, "ünïcödé \u2028 message", (), {"ключ": "значение"}, None, None),
    *[("x", logging.INFO, "odd", (), {"v": value, "w": "plain"}, None, None)
      for value in ODD_VALUES],
]  # fmt: skip
TIMES = [1_700_000_000.0, 1_700_000_000.0005, 1_700_000_000.0015, 1_700_000_000.9994999,
         1_700_000_000.9995, 1_700_000_000.9999995, 1_700_000_001.4999995, 1_699_999_999.5,
         0.0, 0.25, 86_399.9999999, 4_102_444_800.123456]  # fmt: skip


def make_record(spec: Spec, created: float) -> logging.LogRecord:
    name, level, message, args, fields, exc_info, stack_info = spec
    record = logging.LogRecord(name, level, __file__, 1, message, args, exc_info, None, stack_info)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    if fields is not None:
        setattr(record, FIELDS, fields)
    return record


@pytest.mark.parametrize(
    ("new", "old"), [(TextFormatter, OldTextFormatter), (JsonFormatter, OldJsonFormatter)]
)
def test_the_fast_formats_write_the_old_bytes(
    new: Callable[[], logging.Formatter], old: Callable[[], logging.Formatter]
) -> None:
    formatter = new()  # one instance across records and seconds: its time cache too
    for created in TIMES:
        for spec in SPECS:
            expected = old().format(make_record(spec, created))
            assert formatter.format(make_record(spec, created)) == expected, (spec, created)


def test_the_cached_times_are_the_uncached_ones() -> None:
    randomly = random.Random(7)
    times = [randomly.uniform(0, 4e9) for _ in range(3000)]
    times += [t + k / 1000 + d for t in times[:50] for k in range(0, 1000, 97)
              for d in (-5e-7, 5e-7, 4.999e-7)]  # fmt: skip
    for order in (times, sorted(times)):
        text, line = TextFormatter(), JsonFormatter()
        for created in order:
            record = make_record(SPECS[0], created)
            assert text.formatTime(record) == logging.Formatter().formatTime(record), created
            iso = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
            assert json.loads(line.format(record))["time"] == iso, created


def test_text_values_quote_as_before_for_every_character() -> None:
    for value in [*map(chr, range(0x110000)), *ODD_VALUES, "plain", "two words"]:
        assert _text_value(value) == old_text_value(value), repr(value)


class Counting(io.StringIO):
    """A stream that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counting]:
    """``configure_logging("INFO", "text")`` with stderr a counting stream; the root logger,
    the service's loggers and logging's switches as they were afterwards."""
    stream = Counting()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    saved = (root.handlers[:], root.level, {name: getattr(logging, name) for name in switches})
    configure_logging("INFO", "text", flush_after=0)
    try:
        yield stream
    finally:
        for handler in root.handlers:
            handler.flush()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, value in saved[2].items():
            setattr(logging, name, value)


def lines(stream: io.StringIO) -> list[str]:
    return [line.partition(": ")[2] for line in stream.getvalue().splitlines()]


lines_logger = logging.getLogger("tests.service.logs")


def test_without_a_running_loop_a_line_is_written_at_once(stderr: Counting) -> None:
    lines_logger.info("now")
    assert (lines(stderr), stderr.writes) == (["now"], 1)


async def test_a_loop_iteration_writes_its_lines_once_at_its_end(stderr: Counting) -> None:
    for n in range(10):
        lines_logger.info("line %d", n)
    assert stderr.getvalue() == ""  # held until the iteration ends
    await anyio.sleep(0)
    assert (lines(stderr), stderr.writes) == ([f"line {n}" for n in range(10)], 1)
    lines_logger.info("next")
    await anyio.sleep(0)
    assert (lines(stderr)[-1], stderr.writes) == ("next", 2)


async def test_by_default_lines_wait_for_the_flush_interval(
    stderr: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)  # again: pytest's capture sets it per phase
    configure_logging("INFO", "text", flush_after=60.0)  # far longer than this test
    for n in range(3):
        lines_logger.info("line %d", n)
    for _ in range(20):
        await anyio.sleep(0)
    assert stderr.getvalue() == ""  # many iterations later: still held
    lines_logger.warning("careful")  # a warning takes them all out, in order
    assert (lines(stderr), stderr.writes) == (["line 0", "line 1", "line 2", "careful"], 1)


async def test_a_warning_or_an_error_is_written_before_the_call_returns(stderr: Counting) -> None:
    lines_logger.info("before")
    lines_logger.error("boom")
    assert lines(stderr) == ["before", "boom"]  # the held line first, in order
    lines_logger.info("after")
    lines_logger.warning("careful")
    assert lines(stderr) == ["before", "boom", "after", "careful"]


async def test_lines_from_threads_and_the_loop_all_arrive_whole_and_in_order(
    stderr: Counting,
) -> None:
    count = 400

    def log(source: str) -> None:
        for n in range(count):
            lines_logger.info("%s %d %s", source, n, "x" * (n % 50))

    threads = [threading.Thread(target=log, args=(f"thread-{k}",)) for k in range(3)]
    for thread in threads:
        thread.start()
    for n in range(count):
        lines_logger.info("%s %d %s", "loop", n, "x" * (n % 50))
        if n % 7 == 0:
            await anyio.sleep(0)
    for thread in threads:
        await anyio.to_thread.run_sync(thread.join)
    await anyio.sleep(0)
    seen: dict[str, list[int]] = {}
    for line in stderr.getvalue().splitlines():
        match = re.fullmatch(r"\S+ \S+ INFO    tests\.service\.logs: (\S+) (\d+) (x*)", line)
        assert match is not None, line
        source, n, xs = match[1], int(match[2]), match[3]
        assert xs == "x" * (n % 50), line
        seen.setdefault(source, []).append(n)
    assert seen == {source: list(range(count)) for source in ("loop", "thread-0", "thread-1",
                                                               "thread-2")}  # fmt: skip
    assert stderr.writes < 4 * count


def test_lines_held_by_a_loop_that_closed_first_go_out_with_the_next_ones(
    stderr: Counting,
) -> None:
    loop = asyncio.new_event_loop()

    def last_words() -> None:
        lines_logger.info("last words")
        loop.stop()  # the loop ends with this iteration: its write never runs

    loop.call_soon(last_words)
    loop.run_forever()
    loop.close()
    assert stderr.getvalue() == ""

    async def next_loop() -> None:
        lines_logger.info("new loop")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert lines(stderr) == ["last words", "new loop"]
    logging.getLogger().handlers[0].flush()  # logging.shutdown's flush, at exit: nothing held
    assert stderr.writes == 1


@pytest.mark.parametrize("format", ["text", "json"])
async def test_an_access_line_goes_through_the_operators_config_and_reads_as_before(
    format: LogFormat, stderr: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)  # again: pytest's capture sets it per phase
    configure_logging("INFO", format, flush_after=0)
    records: list[logging.LogRecord] = []
    keep = logging.Handler()
    keep.emit = records.append  # type: ignore[method-assign]
    seen = logging.Filter()
    seen.filter = lambda record: record.levelno >= 0  # type: ignore[method-assign]
    request = make_mocked_request("POST", "/v1/chat/completions")
    info = RequestInfo()
    info.route, info.provider, info.fallback = "gpt", "openai-main", False
    info.breaker_outcome, info.client = "success", "k_3f9a2c1b"
    access_logger.addHandler(keep)
    try:
        _log_access(request, info, 200, 0.0123456)
        (record,) = records
        assert record.getMessage() == "POST /v1/chat/completions 200 12.3ms"
        assert getattr(record, FIELDS) == {**ACCESS_FIELDS, "duration_ms": 12.35}
        await anyio.sleep(0)
        old = OldJsonFormatter() if format == "json" else OldTextFormatter()
        assert stderr.getvalue() == old.format(record) + "\n"
        # the operator's level and filters apply
        access_logger.addFilter(seen)
        access_logger.setLevel(logging.WARNING)
        _log_access(request, info, 200, 0.01)
        access_logger.setLevel(logging.NOTSET)
        seen.filter = lambda record: False  # type: ignore[method-assign]
        _log_access(request, info, 200, 0.01)
        assert len(records) == 1
    finally:
        access_logger.removeHandler(keep)
        access_logger.removeFilter(seen)
        access_logger.setLevel(logging.NOTSET)


def test_the_access_record_is_the_one_logging_would_make(
    stderr: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.123456)
    args = ("POST", "/v1/x", 200, 12.34)
    fast = _access_record(args, ACCESS_FIELDS)
    made = access_logger.makeRecord(
        access_logger.name, logging.INFO, "(unknown file)", 0, ACCESS_MESSAGE, args, None,
        "(unknown function)", {FIELDS: ACCESS_FIELDS},
    )  # fmt: skip
    assert type(fast) is type(made)
    assert list(vars(fast).items()) == list(vars(made).items())


def test_a_record_factory_of_the_operators_makes_the_access_records(stderr: Counting) -> None:
    default = logging.getLogRecordFactory()
    made: list[logging.LogRecord] = []

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(default(*args, **kwargs))
        return made[-1]

    logging.setLogRecordFactory(factory)
    try:
        _log_access(make_mocked_request("GET", "/v1/models"), RequestInfo(), 200, 0.001)
    finally:
        logging.setLogRecordFactory(default)
    assert [record.getMessage() for record in made] == ["GET /v1/models 200 1.0ms"]
    assert lines(stderr) == [
        "GET /v1/models 200 1.0ms event=access method=GET path=/v1/models route=- provider=- "
        "status=200 duration_ms=1.0 fallback=- breaker_outcome=- client=-"
    ]
