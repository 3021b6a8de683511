"""Library code talks to the OpenTelemetry API; only ``telemetry/setup.py`` touches the SDK and
the exporters (the application's choice, made in one place)."""

from __future__ import annotations

import ast
from pathlib import Path

TELEMETRY = Path(__file__).resolve().parents[2] / "telemetry"
SDK_ROOTS = ("opentelemetry.sdk", "opentelemetry.exporter")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_only_setup_imports_the_sdk_and_exporters() -> None:
    importers = {
        path.name
        for path in TELEMETRY.glob("*.py")
        if any(module.startswith(SDK_ROOTS) for module in imported_modules(path))
    }
    assert importers == {"setup.py"}


def test_telemetry_does_not_import_service() -> None:
    for path in TELEMETRY.glob("*.py"):
        assert not any(m.split(".")[0] == "service" for m in imported_modules(path)), path.name
