"""Run every benchmark in one invocation and print one summary (Markdown, for RESULTS.md).

``python -m benchmarks.run`` runs the sidecar harnesses (resolve latency vs. echo, the storm vs.
central, index load / reload / cold start / RSS) in this process, then every other
``benchmarks/bench_*.py`` module as ``python -m benchmarks.<name>`` and includes its output.
Baselines run side by side with what they are compared to, so ratios hold even though absolute
figures drift on a shared machine.

Options: ``--quick`` (tiny sizes: checks that everything runs, the figures mean nothing),
``--only NAME`` (repeatable: ``latency``, ``storm``, ``index``, ``propagation`` or another
module's name).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import bench_sidecar_index, bench_sidecar_latency, bench_sidecar_storm
from benchmarks.harness import Row

__all__ = ["SIDECAR_SUITES", "main", "markdown", "run_sidecar"]

#: name -> (full run, quick run)
SIDECAR_SUITES: dict[str, tuple[Callable[[], list[Row]], Callable[[], list[Row]]]] = {
    "latency": (
        lambda: bench_sidecar_latency.run(requests=20_000, rounds=10),
        lambda: bench_sidecar_latency.run(requests=200, rounds=2, models=5),
    ),
    "storm": (
        lambda: bench_sidecar_storm.run(connections=2000, processes=4, resolves=10, repeats=3),
        lambda: bench_sidecar_storm.run(
            connections=8, processes=2, resolves=3, repeats=1, models=5
        ),
    ),
    "index": (
        lambda: bench_sidecar_index.run(models=1000, versions_per_model=100, loads=3, starts=3),
        lambda: bench_sidecar_index.run(models=5, versions_per_model=4, loads=1, starts=1),
    ),
}

#: Short ``--only`` names of other modules.
_ALIASES = {"propagation": "bench_propagation"}

#: Modules run by the sidecar suites above (not run again as "other" modules).
_SIDECAR_MODULES = {"bench_sidecar_latency", "bench_sidecar_storm", "bench_sidecar_index"}


def run_sidecar(names: list[str], quick: bool) -> list[Row]:
    """Run the named sidecar suites; return their rows."""
    rows: list[Row] = []
    for name in names:
        full, small = SIDECAR_SUITES[name]
        started = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        rows += (small if quick else full)()
        print(f"== {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return rows


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| what | measured | baseline (same run) | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.value} | {row.baseline or '-'} | {row.ratio or '-'} "
            f"| {row.target or '-'} | {row.verdict()} |"
        )
    return "\n".join(lines)


def _other_modules() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        path.stem
        for path in here.glob("bench_*.py")
        if path.stem not in _SIDECAR_MODULES and not path.stem.startswith("bench_test")
    )


def _run_other(name: str) -> str:
    started = time.monotonic()
    print(f"== {name} ...", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    out = done.stdout.strip()
    if done.returncode != 0:
        out += f"\n(exit code {done.returncode})\n{done.stderr.strip()[-2000:]}"
    print(f"== {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", action="append", default=None, metavar="NAME")
    args = parser.parse_args()
    others = _other_modules()
    wanted = [_ALIASES.get(n, n) for n in args.only or [*SIDECAR_SUITES, *others]]
    unknown = [n for n in wanted if n not in SIDECAR_SUITES and n not in others]
    if unknown:
        known = [*SIDECAR_SUITES, *_ALIASES, *others]
        parser.error(f"unknown benchmark(s) {unknown}; known: {known}")
    load = os.getloadavg()
    print(
        f"# modelreg benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average before "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; command: `python -m benchmarks.run"
        f"{' --quick' if args.quick else ''}"
        f"{''.join(f' --only {n}' for n in args.only or [])}`\n"
    )
    rows = run_sidecar([n for n in wanted if n in SIDECAR_SUITES], args.quick)
    if rows:
        print("## Sidecar\n")
        print(markdown(rows))
        print()
    for name in (n for n in wanted if n in others):
        if args.quick:
            print(f"## {name}\n\n(skipped in --quick)\n")
            continue
        print(f"## {name}\n\n```\n{_run_other(name)}\n```\n")


if __name__ == "__main__":
    main()
