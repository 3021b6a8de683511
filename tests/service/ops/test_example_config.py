"""examples/breakerd.toml: it loads, and it mentions every section and every key."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from service import config as config_module
from service.config import load_config

EXAMPLE = Path(__file__).parents[3] / "examples" / "breakerd.toml"


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.routes and config.providers
    assert config.service.host == "127.0.0.1"


def test_the_example_config_mentions_every_section_and_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    headers = set(re.findall(r"^\[([a-z_]+)[.\]]", text, re.MULTILINE))
    sections = {*config_module._TABLES, *config_module._NAMED_TABLES}
    assert sections <= headers, f"sections missing from {EXAMPLE.name}: {sections - headers}"
    missing = []
    for section, struct in {**config_module._TABLES, **config_module._NAMED_TABLES}.items():
        for field in msgspec.structs.fields(struct):
            if not re.search(rf"^#? ?{field.name} = ", text, re.MULTILINE):
                missing.append(f"{section}.{field.name}")
    assert not missing, f"keys not shown (set or commented) in {EXAMPLE.name}: {missing}"
