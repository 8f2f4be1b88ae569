"""Index load, reload under traffic, cold start and memory of the sidecar with 100k versions.

* **load**: :func:`modelreg.sidecar.index.load` of a 100k-version copy, in this process (what the
  sidecar does at start and when a copy is replaced); median of ``--loads``.
* **incremental reload**: ``load(path, previous=index)`` after one alias move in the copy
  (what the sidecar's worker thread does on a revision change); median of ``--loads``.
* **reload under traffic**: a running sidecar serves one client's sequential resolves while its
  local copy changes (one event appended, ``-txid`` rewritten as litestream does): the time until
  the new revision is served, and the lookup latency during that window beside the latency
  before it (no lookup may wait for the load).
* **cold start**: ``reg sidecar run`` on a data directory holding a 100k-version local copy and
  an unreachable replica: seconds from spawn to the socket answering and to the first answered
  resolve, for the first start on a freshly installed copy and for ``--starts`` restarts on the
  same data directory (median).
* **RSS**: ``VmRSS`` / ``VmHWM`` of that sidecar with the index loaded, beside a sidecar with a
  10-version registry (the interpreter's floor).

Targets (docs/ARCHITECTURE.md): reload ≤ 1 s in the background, no lookup waits; cold start
answering in ≤ 1 s; ≤ 200 MB RSS.

Run: ``python -m benchmarks.bench_sidecar_index [--models 1000 --versions-per-model 100]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Row,
    bump_local_copy,
    install_local_copy,
    percentile,
    rss_kb,
    short_tmpdir,
    start_sidecar,
    wait_sidecar_ready,
)
from benchmarks.registry_db import BuiltRegistry, build_registry
from modelreg.errors import RegistryError
from modelreg.sidecar.client import Client
from modelreg.sidecar.index import load

__all__ = ["main", "run"]


def _load_times(db: BuiltRegistry, loads: int) -> list[float]:
    out = []
    for _ in range(loads):
        started = time.perf_counter()
        index = load(db.path)
        out.append(time.perf_counter() - started)
        assert index.versions == db.versions
        del index
    return out


def _incremental_times(db: BuiltRegistry, loads: int) -> list[float]:
    """Seconds of ``load(path, previous=index)`` after one alias move, ``loads`` times."""
    work = db.path.with_name("incremental.db")
    install_local_copy(db.path, work.parent / "incremental")
    copy = work.parent / "incremental" / "replica-1.db"
    index = load(copy)
    out = []
    for i in range(loads):
        bump_local_copy(copy, db.model_name(i % db.models))
        started = time.perf_counter()
        index = load(copy, previous=index)
        out.append(time.perf_counter() - started)
        assert index.versions == db.versions
    return out


def _time_start(tmp: Path, model: str) -> tuple[float, float, dict[str, int]]:
    """Start a sidecar on ``tmp/sidecar``: seconds from spawn to its socket answering ``ping``,
    to the first answered resolve, and its RSS once answering."""
    proc, socket_path = start_sidecar(tmp, wait_ready=False)
    try:
        client = Client(socket_path, connect_deadline_s=120.0, timeout_s=30.0)
        with client:
            client.ping()
            pinged = time.monotonic() - proc.started
            while True:
                try:
                    client.resolve(model, "production")
                    break
                except RegistryError:  # NotReady while the copy loads
                    if not proc.alive():
                        raise RuntimeError(f"sidecar exited: {proc.log_tail()}") from None
                    time.sleep(0.005)
            answered = time.monotonic() - proc.started
        wait_sidecar_ready(proc, socket_path)
        time.sleep(0.5)  # let the allocator settle before reading RSS
        return pinged, answered, rss_kb(proc.pid)
    finally:
        proc.stop()


def _cold_starts(
    tmp: Path, db: BuiltRegistry, starts: int
) -> tuple[tuple[float, float, dict[str, int]], list[tuple[float, float, dict[str, int]]]]:
    """The first start on a freshly installed local copy, then ``starts`` restarts on the same
    data directory (what a node reboot or a sidecar upgrade does)."""
    install_local_copy(db.path, tmp / "sidecar")
    first = _time_start(tmp, db.model_name(0))
    return first, [_time_start(tmp, db.model_name(0)) for _ in range(starts)]


def _reload_under_traffic(tmp: Path, db: BuiltRegistry) -> dict[str, Any]:
    copy = install_local_copy(db.path, tmp / "sidecar")
    proc, socket_path = start_sidecar(tmp)
    try:
        model = db.model_name(0)
        with Client(socket_path) as client:
            before: list[float] = []
            for _ in range(2000):
                started = time.perf_counter()
                client.resolve(model, "production")
                before.append((time.perf_counter() - started) * 1e6)
            revision = bump_local_copy(copy)
            bumped = time.perf_counter()
            during: list[float] = []
            while True:
                started = time.perf_counter()
                answer = client.resolve(model, "production")
                during.append((time.perf_counter() - started) * 1e6)
                if answer.revision >= revision:
                    break
                if time.perf_counter() - bumped > 120:
                    raise TimeoutError("the sidecar did not reload within 120 s")
            visible_s = time.perf_counter() - bumped
            status = client.status()
        return {
            "visible_s": visible_s,
            "index_load_ms": status.get("index_load_ms"),
            "before_p50_us": percentile(before, 50),
            "before_p99_us": percentile(before, 99),
            "during_p50_us": percentile(during, 50),
            "during_p99_us": percentile(during, 99),
            "during_max_us": max(during),
            "during_n": len(during),
        }
    finally:
        proc.stop()


def run(
    models: int = 1000, versions_per_model: int = 100, loads: int = 3, starts: int = 3
) -> list[Row]:
    """All four measurements on one generated registry."""
    with short_tmpdir() as tmp:
        db = build_registry(tmp / "registry.db", models, versions_per_model)
        small = build_registry(tmp / "small.db", 1, 10)
        load_s = _load_times(db, loads)
        incremental_s = _incremental_times(db, loads)
        reload = _reload_under_traffic(tmp / "r", db)
        first, colds = _cold_starts(tmp / "c", db, starts)
        _, _, floor = _cold_starts(tmp / "floor", small, 0)[0]
    n = f"{db.versions:,} versions"
    load_median = statistics.median(load_s)
    incremental_median = statistics.median(incremental_s)
    cold_median = statistics.median(c[1] for c in colds)
    ping_median = statistics.median(c[0] for c in colds)
    rss = max(c[2]["VmRSS"] for c in [first, *colds]) / 1024
    hwm = max(c[2]["VmHWM"] for c in [first, *colds]) / 1024
    floor_rss = floor["VmRSS"] / 1024
    return [
        Row(
            name=f"index load in process ({n})",
            value=f"median {load_median:.2f} s ({', '.join(f'{s:.2f}' for s in load_s)})",
            target="≤ 1 s",
            met=load_median <= 1.0,
            extra={"loads_s": load_s},
        ),
        Row(
            name=f"index reload in process after one alias move ({n})",
            value=(
                f"median {incremental_median * 1000:.0f} ms "
                f"({', '.join(f'{s * 1000:.0f}' for s in incremental_s)})"
            ),
            baseline=f"full load {load_median:.2f} s",
            target="≤ 1 s",
            met=incremental_median <= 1.0,
            extra={"incremental_s": incremental_s},
        ),
        Row(
            name=f"reload under traffic ({n})",
            value=(
                f"new revision served after {reload['visible_s']:.2f} s (sidecar's load "
                f"{reload['index_load_ms'] or 0:.0f} ms); lookups during it p50 "
                f"{reload['during_p50_us']:.0f} µs, p99 {reload['during_p99_us']:.0f} µs, "
                f"max {reload['during_max_us'] / 1000:.1f} ms over {reload['during_n']} lookups"
            ),
            baseline=(
                f"before: p50 {reload['before_p50_us']:.0f} µs, "
                f"p99 {reload['before_p99_us']:.0f} µs"
            ),
            target="≤ 1 s, no lookup waits",
            met=reload["visible_s"] <= 1.0,
            extra=reload,
        ),
        Row(
            name=f"first start on a fresh local copy ({n})",
            value=f"socket answering after {first[0]:.2f} s, first resolve after {first[1]:.2f} s",
            target="≤ 1 s",
            met=first[1] <= 1.0,
        ),
        Row(
            name=f"cold restart from its local copy ({n})",
            value=(
                f"first resolve after median {cold_median:.2f} s "
                f"({', '.join(f'{c[1]:.2f}' for c in colds)}); socket answering after median "
                f"{ping_median:.2f} s"
            ),
            target="≤ 1 s",
            met=cold_median <= 1.0,
        ),
        Row(
            name=f"sidecar RSS ({n})",
            value=f"{rss:.0f} MB (peak {hwm:.0f} MB)",
            baseline=f"10 versions: {floor_rss:.0f} MB",
            target="≤ 200 MB",
            met=rss <= 200,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions-per-model", type=int, default=100)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    for row in run(args.models, args.versions_per_model, args.loads, args.starts):
        print(f"{row.name}: {row.value} [{row.baseline}] {row.verdict()}")


if __name__ == "__main__":
    main()
