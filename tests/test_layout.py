"""The direction of imports is part of the design: ``actors`` never imports ``service`` or
``telemetry``, and ``actors`` imports only the standard library, anyio and msgspec."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED_THIRD_PARTY = {"anyio", "msgspec"}


def imported_roots(package: str) -> set[str]:
    roots: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def test_actors_imports_only_stdlib_anyio_and_msgspec() -> None:
    outside = {
        root
        for root in imported_roots("actors")
        if root not in sys.stdlib_module_names and root != "actors"
    }
    assert outside <= ALLOWED_THIRD_PARTY, outside


def test_service_and_telemetry_depend_on_actors_not_the_reverse() -> None:
    assert not imported_roots("actors") & {"service", "telemetry"}
    assert "service" not in imported_roots("telemetry")
