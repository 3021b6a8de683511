"""The results, for people (a markdown table) and for programs (JSON)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

BARE = "no breaker"
PEER_COLUMNS = ["pybreaker", "aiobreaker", "purgatory", "circuitbreaker", "interlock-cb"]
FIGURE_COLUMNS = [BARE, *PEER_COLUMNS, "breakerd"]
PACKAGES = ["pybreaker", "aiobreaker", "purgatory", "circuitbreaker", "interlock-cb", "breakerd"]

_FORMATS = {"bytes": "{:,.0f}", "ms": "{:,.0f}", "s": "{:.2f}", "MB": "{:,.1f}"}


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh the figures."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return _FORMATS.get(unit, "{:.2f}").format(value)


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table, one line per row, then the notes for every "n/a"."""
    header = [
        "#",
        "scenario",
        "unit",
        *FIGURE_COLUMNS,
        "breakerd / best peer",
        "bar",
        "measured",
        "result",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: dict[str, str] = {}
    for row in rows:
        unit = row["unit"]
        figures = row["figures"]
        title = row["title"]
        others = [name for name in figures if name not in FIGURE_COLUMNS]
        if others:
            title += " (" + "; ".join(f"{n}: {fmt(figures[n], unit)}" for n in others) + ")"
        cells = [row["key"], title, unit]
        for column in FIGURE_COLUMNS:
            if column in figures:
                cells.append(fmt(figures[column], unit))
            elif column in row["notes"]:
                marker = _marker(notes, row["notes"][column])
                cells.append(f"n/a{marker}")
            else:
                cells.append("")
        ratio = row["best_peer_ratio"]
        cells.append("" if ratio is None else f"{ratio:.2f}")
        cells.append(row["bar"])
        cells.append("; ".join(f"{c['label']} = {c['value']:.2f}" for c in row["checks"]))
        cells.append(_verdict(row))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"{marker} {text}" for text, marker in notes.items())
    return "\n".join(lines)


def _marker(notes: dict[str, str], text: str) -> str:
    if text not in notes:
        notes[text] = "[" + str(len(notes) + 1) + "]"
    return notes[text]


def _verdict(row: dict[str, Any]) -> str:
    if row.get("error"):
        return "ERROR"
    if row["passed"] is None:
        return "n/a"
    return "pass" if row["passed"] else "**FAIL**"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
