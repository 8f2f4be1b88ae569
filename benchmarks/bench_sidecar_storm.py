"""The deploy storm: many fresh connections at once, against the sidecar and against central.

2,000 fresh connections from 4 client processes (500 each, all opened at once), 10 sequential
resolves per connection, every answer checked. The same storm then hits central's
``GET /v1/resolve`` over HTTP/1.1 keep-alive with the same data. Reported: resolves/s (all
answers over the wall time from the common start to the last answer), errors, connect retries
(EAGAIN/ECONNREFUSED, retried as the client library does) and the slowest client's time from
its first connect to its tenth answer.

Targets (docs/ARCHITECTURE.md): 0 errors, ≥ 50,000 resolves/s, every client answered within 1 s; the
sidecar ≥ 100x central's throughput.

Run: ``python -m benchmarks.bench_sidecar_storm [--connections 2000] [--processes 4]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    READY_TIMEOUT_S,
    BenchProc,
    Row,
    install_local_copy,
    percentile,
    short_tmpdir,
    start_central,
    start_sidecar,
    wait_until,
)
from benchmarks.registry_db import BuiltRegistry, build_registry

__all__ = ["main", "run", "storm"]

VERSIONS_PER_MODEL = 10


def _targets(db: BuiltRegistry, count: int, seed: int = 7) -> list[list[Any]]:
    """``count`` random ``[model, ref, expected version]`` triples."""
    rng = random.Random(seed)
    production = (VERSIONS_PER_MODEL + 1) // 2
    out: list[list[Any]] = []
    for _ in range(count):
        model = db.model_name(rng.randrange(db.models))
        ref, version = rng.choice(
            [
                ("production", production),
                ("staging", VERSIONS_PER_MODEL),
                ("latest", VERSIONS_PER_MODEL),
                *[(str(n), n) for n in (1, 2, 3)],
            ]
        )
        out.append([model, ref, version])
    return out


def storm(
    target_args: list[str],
    connections: int,
    processes: int,
    resolves: int,
    targets: list[list[Any]],
) -> dict[str, Any]:
    """Run one storm with ``processes`` workers; return the aggregate figures."""
    per_process = connections // processes
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.storm_worker",
                *target_args,
                "--connections",
                str(per_process),
                "--resolves",
                str(resolves),
                "--targets",
                json.dumps(targets),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"storm worker did not start: {line!r}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            assert worker.stdout is not None
            results.append(json.loads(worker.stdout.readline()))
            worker.wait(60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(5)
            for pipe in (worker.stdin, worker.stdout):
                if pipe is not None:
                    pipe.close()
    started = min(r["started"] for r in results)
    finished = max(r["finished"] for r in results)
    ok = sum(r["ok"] for r in results)
    latencies = [lat for r in results for lat in r["latencies"]]
    return {
        "resolves": ok,
        "errors": sum(r["errors"] for r in results),
        "connect_retries": sum(r["connect_retries"] for r in results),
        "wall_s": finished - started,
        "per_s": ok / (finished - started) if finished > started else 0.0,
        "max_client_s": max(r["max_client_s"] for r in results),
        "p99_client_s": percentile(latencies, 99),
        "error_samples": [s for r in results for s in r["error_samples"]][:5],
    }


def start_lookup_server(directory: Path, db: Path) -> tuple[BenchProc, Path]:
    """Start the minimal lookup server (:mod:`benchmarks.lookup_server`) on ``db``."""
    path = directory / "lookup.sock"
    proc = BenchProc(
        [sys.executable, "-m", "benchmarks.lookup_server", str(path), str(db)],
        directory / "lookup.log",
    )
    try:
        wait_until(lambda: "ready" in proc.log_tail(), READY_TIMEOUT_S, "lookup server")
    except BaseException:
        proc.stop()
        raise
    return proc, path


def run(
    connections: int = 2000,
    processes: int = 4,
    resolves: int = 10,
    repeats: int = 3,
    models: int = 1000,
    central: bool = True,
) -> list[Row]:
    """The sidecar storm ``repeats`` times (median reported) and the central storm once."""
    with short_tmpdir() as tmp:
        db = build_registry(tmp / "registry.db", models, VERSIONS_PER_MODEL)
        targets = _targets(db, max(200, resolves))
        install_local_copy(db.path, tmp / "sidecar")
        sidecar, socket_path = start_sidecar(tmp)
        lookup, lookup_path = start_lookup_server(tmp, db.path)
        runs: list[dict[str, Any]] = []
        baseline_runs: list[dict[str, Any]] = []
        try:
            for _ in range(repeats):  # interleaved: both see the same machine
                baseline_runs.append(
                    storm(["--socket", str(lookup_path)], connections, processes, resolves, targets)
                )
                runs.append(
                    storm(["--socket", str(socket_path)], connections, processes, resolves, targets)
                )
        finally:
            lookup.stop()
            sidecar.stop()
        central_run: dict[str, Any] | None = None
        if central:
            proc, url, token = start_central(tmp, db)
            try:
                port = url.rsplit(":", 1)[1]
                central_run = storm(
                    ["--port", port, "--token", token], connections, processes, resolves, targets
                )
            finally:
                proc.stop()
    median = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
    per_s = statistics.median(r["per_s"] for r in runs)
    errors = sum(r["errors"] for r in runs)
    max_client = max(r["max_client_s"] for r in runs)
    each = ", ".join(f"{r['per_s']:,.0f}" for r in runs)
    label = f"{connections} connections x {resolves} resolves, {processes} processes"
    base_per_s = statistics.median(r["per_s"] for r in baseline_runs)
    rows = [
        Row(
            name=f"storm on a minimal uvloop lookup server ({label})",
            value=(
                f"{base_per_s:,.0f} resolves/s (median of {len(baseline_runs)}: "
                + ", ".join(f"{r['per_s']:,.0f}" for r in baseline_runs)
                + f"), {sum(r['errors'] for r in baseline_runs)} errors, slowest client "
                f"{max(r['max_client_s'] for r in baseline_runs) * 1000:.0f} ms"
            ),
            extra={"runs": baseline_runs},
        ),
        Row(
            name=f"storm on the sidecar ({label})",
            value=(
                f"{per_s:,.0f} resolves/s (median of {len(runs)}: {each}), {errors} errors, "
                f"slowest client {max_client * 1000:.0f} ms, "
                f"{sum(r['connect_retries'] for r in runs)} connect retries"
            ),
            baseline=f"lookup server {base_per_s:,.0f}/s",
            ratio=f"{per_s / base_per_s:.2f}x" if base_per_s else "-",
            target="0 errors, ≥ 50,000/s, every client ≤ 1 s",
            met=errors == 0 and per_s >= 50_000 and max_client <= 1.0,
            extra={"runs": runs, "median": median},
        ),
    ]
    if central_run is not None:
        ratio = per_s / central_run["per_s"] if central_run["per_s"] else float("inf")
        rows.append(
            Row(
                name=f"storm on central HTTP ({label})",
                value=(
                    f"{central_run['per_s']:,.0f} resolves/s, {central_run['errors']} errors, "
                    f"slowest client {central_run['max_client_s'] * 1000:.0f} ms, "
                    f"{central_run['connect_retries']} connect retries"
                ),
                extra={"run": central_run},
            )
        )
        rows.append(
            Row(
                name="storm throughput, sidecar ÷ central",
                value=f"{ratio:,.0f}x",
                baseline=f"central {central_run['per_s']:,.0f}/s",
                ratio=f"{ratio:,.0f}x",
                target="≥ 100x",
                met=ratio >= 100,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--resolves", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-central", action="store_true")
    args = parser.parse_args()
    rows = run(
        args.connections, args.processes, args.resolves, args.repeats, central=not args.no_central
    )
    for row in rows:
        print(f"{row.name}: {row.value} [{row.verdict()}]")
        for sample in row.extra.get("median", row.extra.get("run", {})).get("error_samples", []):
            print(f"    error: {sample}")


if __name__ == "__main__":
    main()
