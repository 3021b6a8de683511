"""``python -m tests.bench [--quick] [--only GROUP ...] [--rounds N] [--strict]``.

The parent runs one worker process per scenario group (``--worker GROUP --out FILE``, internal),
collects their rows, prints the markdown table and writes ``$BENCH_JSON``
(default ``bench-results.json``).  Exit status: 0 unless a worker crashed, or, with
``--strict``, a row missed its bar.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import report

MIN_ROUNDS = 7


def main() -> int:
    args = _parser().parse_args()
    rounds = args.rounds or MIN_ROUNDS
    if rounds < MIN_ROUNDS:
        raise SystemExit(f"--rounds: at least {MIN_ROUNDS}, got {rounds}")
    if args.registry_child:
        from tests.bench.scenarios import registry_child

        print(json.dumps(registry_child(args.registry_child, args.count)))
        return 0
    if args.worker:
        return _work(args.worker, Path(args.out), args.quick, rounds)
    return _lead(args.only, args.quick, rounds, args.strict)


def _parser() -> argparse.ArgumentParser:
    from tests.bench.scenarios import GROUPS

    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller loads; under a minute")
    parser.add_argument("--only", nargs="+", choices=list(GROUPS), help="run these groups")
    parser.add_argument("--rounds", type=int, help=f"rounds per figure (>= {MIN_ROUNDS})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed")
    parser.add_argument("--worker", choices=list(GROUPS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--registry-child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    return parser


def _work(group: str, out: Path, quick: bool, rounds: int) -> int:
    from tests.bench.scenarios import GROUPS, Settings

    rows = GROUPS[group](Settings(quick=quick, rounds=rounds))
    out.write_text(json.dumps([row.to_json() for row in rows]))
    return 0


def _lead(only: list[str] | None, quick: bool, rounds: int, strict: bool) -> int:
    from tests.bench.scenarios import GROUPS, ROW_ORDER

    started = time.monotonic()
    facts = report.machine()
    rows: list[dict[str, Any]] = []
    crashed: list[str] = []
    for group in only or list(GROUPS):
        print(f"group {group}:", file=sys.stderr, flush=True)
        group_started = time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "rows.json"
            command = [sys.executable, "-m", "tests.bench", "--worker", group, "--out", str(out)]
            command += ["--rounds", str(rounds), *(["--quick"] if quick else [])]
            done = subprocess.run(command, check=False)
            if done.returncode != 0 or not out.exists():
                crashed.append(group)
                continue
            rows.extend(json.loads(out.read_text()))
        print(f"  ({time.monotonic() - group_started:.1f} s)", file=sys.stderr, flush=True)
    rows.sort(key=lambda row: ROW_ORDER.index(str(row["key"])))
    facts["load_average_after"] = os.getloadavg()
    facts["seconds"] = round(time.monotonic() - started, 1)
    text = report.table(rows)
    print()
    print(text)
    print(_machine_line(facts, quick, rounds))
    if crashed:
        print(f"\nworker crashed: {', '.join(crashed)}")
    path = Path(os.environ.get("BENCH_JSON") or "bench-results.json")
    document = {"machine": facts, "quick": quick, "rounds": rounds, "crashed": crashed}
    report.write_json(path, {**document, "table": text, "rows": rows})
    print(f"JSON: {path}")
    if crashed:
        return 2
    if strict and any(row["passed"] is False for row in rows):
        return 1
    return 0


def _machine_line(facts: dict[str, object], quick: bool, rounds: int) -> str:
    mode = "quick (reduced loads)" if quick else "full"
    load = facts["load_average"]
    return (
        f"\nMachine: {facts['nproc']} CPUs ({facts['cpu']}), Python {facts['python']}, "
        f"{facts['platform']}; load average at start {load}.  Mode: {mode}, median of "
        f"{rounds} interleaved rounds; {facts['seconds']} s."
    )


if __name__ == "__main__":
    sys.exit(main())
