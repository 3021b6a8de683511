"""``--log-level``, ``--log-format`` and ``--version`` on the serving command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from service.__main__ import configure, version
from service.logs import JsonFormatter, TextFormatter, configure_logging


def test_log_flags_win_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "breakerd.toml"
    config.write_text('[logging]\nlevel = "WARNING"\nformat = "text"\n', encoding="utf-8")
    assert configure(["--config", str(config)]).logging.level == "WARNING"
    chosen = configure(["--config", str(config), "--log-level", "debug", "--log-format", "json"])
    assert (chosen.logging.level, chosen.logging.format) == ("DEBUG", "json")


@pytest.mark.parametrize("argv", [["--log-level", "loud"], ["--log-format", "xml"]])
def test_bad_log_flags_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        configure(argv)
    assert exit.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        configure(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"breakerd {version()}"


def test_configure_logging_installs_one_handler_in_the_format() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("WARNING", "json")
        (handler,) = [h for h in root.handlers if type(h) is logging.StreamHandler]
        assert isinstance(handler.formatter, JsonFormatter) and root.level == logging.WARNING
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hi", None, None)
        assert json.loads(handler.format(record))["message"] == "hi"
        configure_logging("INFO", "text")
        (handler,) = [h for h in root.handlers if type(h) is logging.StreamHandler]
        assert isinstance(handler.formatter, TextFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
