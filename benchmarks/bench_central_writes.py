"""Central's write throughput: registrations/s from concurrent clients, each acknowledged after
commit (or, with ``?wait=replicated``, once litestream uploaded it), then checked to be in the
replica.

Runs the same load side by side against central with replication (the embedded default: a
``file://`` replica, litestream syncing every second), the same with every write made with
``?wait=replicated`` (acknowledged only once the replica holds it: central/durability.py), the
two again on an S3 replica (moto_server) unless ``--no-s3``, and ``--replica none``, so the
ratios show what replication and what synchronous acknowledgement cost. After the load it waits
until each replica holds the last acknowledged revision and restores it to count the versions:
every acknowledged registration must be there.

The centrals run at the same time and take turns under load (``--rounds`` rounds each), so
drifting machine load hits all alike; the table gives the median round.

``python -m benchmarks.bench_central_writes [--seconds 10] [--clients 32] [--rounds 3]
[--no-s3]`` prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import BUCKET, s3_replica_url
from tests.procs import CentralProc, MotoProc, start_central, start_moto, wait_for
from tests.replication.helpers import restore

TARGET_PER_S = 500.0
MODELS = 4


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _load(
    central: CentralProc, seconds: float, clients: int, first: int, create: bool, wait: bool
) -> dict[str, Any]:
    """``clients`` concurrent registrations for ``seconds``; version numbers from ``first``;
    with ``wait`` each made with ``?wait=replicated``."""
    query = "?wait=replicated" if wait else ""
    headers = {"Authorization": f"Bearer {central.admin_token}"}
    latencies: list[float] = []
    errors = 0
    last_revision = 0
    counter = first
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(central.url, headers=headers, connector=connector) as http:
        for m in range(MODELS if create else 0):
            async with http.post("/v1/models", json={"name": f"bench-{m}"}) as response:
                assert response.status == 201, await response.text()
        deadline = time.monotonic() + seconds

        async def client() -> None:
            nonlocal errors, last_revision, counter
            while time.monotonic() < deadline:
                counter += 1
                n = counter
                body = {
                    "artifact_uri": f"s3://bench/{n}.pkl",
                    "sha256": f"{n:064x}",
                    "run_id": f"run-{n}",
                }
                started = time.perf_counter()
                path = f"/v1/models/bench-{n % MODELS}/versions{query}"
                async with http.post(path, json=body) as r:
                    answer = await r.json()
                if r.status != 201:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                last_revision = max(last_revision, int(answer["revision"]))

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.monotonic() - started
    return {
        "acked": len(latencies),
        "errors": errors,
        "rate": len(latencies) / elapsed,
        "latencies": latencies,
        "last_revision": last_revision,
        "next": counter,
    }


def _size_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1e6
    except FileNotFoundError:
        return 0.0


def _count_versions(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        versions = conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
        revision = conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]
        return int(versions), int(revision)
    finally:
        conn.close()


#: (name, label, replica kind, wait=replicated)
KINDS = (
    ("file", "file replica, sync 1 s", "file", False),
    ("file-wait", "file replica, ?wait=replicated", "file", True),
    ("s3", "S3 replica (moto_server), sync 1 s", "s3", False),
    ("s3-wait", "S3 replica (moto_server), ?wait=replicated", "s3", True),
    ("none", "--replica none (baseline)", "none", False),
)


def run(seconds: float, clients: int, rounds: int, s3: bool = True) -> str:
    """Interleave ``rounds`` load rounds on every central of :data:`KINDS`."""
    root = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    kinds = [k for k in KINDS if s3 or k[2] != "s3"]
    names = [k[0] for k in kinds]
    rates: dict[str, list[float]] = {k: [] for k in names}
    latencies: dict[str, list[float]] = {k: [] for k in names}
    acked = dict.fromkeys(names, 0)
    errors = dict.fromkeys(names, 0)
    counters = dict.fromkeys(names, 0)
    last = dict.fromkeys(names, 0)
    replicas: dict[str, str] = {}
    restored: dict[str, int] = {}
    drain: dict[str, float] = {}
    centrals: dict[str, CentralProc] = {}
    moto: MotoProc | None = None
    try:
        if s3:
            for key, value in (
                ("AWS_ACCESS_KEY_ID", "bench"),
                ("AWS_SECRET_ACCESS_KEY", "bench"),
                ("AWS_REGION", "us-east-1"),
            ):
                os.environ.setdefault(key, value)
            moto = start_moto()
            moto.create_bucket(BUCKET)
        for name, _, kind, _ in kinds:
            if kind == "file":
                replicas[name] = f"file://{root / name / 'replica'}"
            elif kind == "s3":
                assert moto is not None
                replicas[name] = s3_replica_url(moto, f"bench-{name}")
            centrals[name] = start_central(
                root / name / "data",
                replicas.get(name, "none"),
                sync_interval=1.0,
                heartbeat_interval=2.0,
            )
        for n in range(rounds):
            for name, _, _, wait in kinds:
                result = asyncio.run(
                    _load(centrals[name], seconds, clients, counters[name], n == 0, wait)
                )
                counters[name] = result["next"]
                rates[name].append(result["rate"])
                latencies[name] += result["latencies"]
                acked[name] += result["acked"]
                errors[name] += result["errors"]
                last[name] = max(last[name], result["last_revision"])
        wal = {k: _size_mb(root / k / "data" / "registry.db-wal") for k in names}
        load_ended = time.monotonic()
        for name, replica in replicas.items():
            probe = root / "probe" / name / "registry.db"

            def replicated(replica: str = replica, probe: Path = probe, name: str = name) -> bool:
                copy = restore(replica, "registry", probe)
                return copy is not None and _count_versions(copy)[1] >= last[name]

            wait_for(replicated, timeout=120, interval=0.2, what=f"the {name} replica")
            drain[name] = time.monotonic() - load_ended
            restored[name] = _count_versions(probe)[0]
    finally:
        for central in centrals.values():
            central.stop()
        if moto is not None:
            moto.close()
        shutil.rmtree(root, ignore_errors=True)
    median = {k: statistics.median(rates[k]) for k in names}
    all_ok = all(restored[k] == acked[k] and not errors[k] for k in replicas)
    met = median["file"] >= TARGET_PER_S and all_ok
    lines = [
        f"{clients} concurrent clients (aiohttp, keep-alive), {rounds} interleaved rounds of "
        f"{seconds:g} s per central, {MODELS} models; the centrals and the clients share the "
        "machine.",
        "",
        "| central | acknowledged | errors | registrations/s, median (rounds) | p50 ms | p99 ms "
        "| vs baseline | replica holds every ack |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label, _, _ in kinds:
        each = ", ".join(f"{r:.0f}" for r in rates[name])
        held = (
            "-"
            if name not in replicas
            else f"{restored[name]} of {acked[name]} (after {drain[name]:.2f} s)"
        )
        lines.append(
            f"| {label} | {acked[name]} | {errors[name]} | {median[name]:.0f} ({each}) | "
            f"{_percentile(latencies[name], 0.5) * 1000:.1f} | "
            f"{_percentile(latencies[name], 0.99) * 1000:.1f} | "
            f"{median[name] / median['none']:.2f} | {held} |"
        )
    ratios = [("file-wait", "file")] + ([("s3-wait", "s3")] if s3 else [])
    lines += [
        "",
        "synchronous / normal acknowledgement throughput (medians): "
        + ", ".join(f"{w}: {median[w] / median[n]:.2f}" for w, n in ratios),
        "registry.db-wal at the end: "
        + ", ".join(f"{k} {wal[k]:.1f} MB" for k in names)
        + " (file sizes: litestream checkpoints a replicated WAL, SQLite's autocheckpoint "
        "every 1000 pages the unreplicated one; a passive checkpoint reuses the file without "
        "shrinking it)",
        "the replica held the last acknowledged revision after the load ended; restored "
        f"versions equal acknowledged ones: {'all present' if all_ok else 'MISSING WRITES'}",
        f"target >= {TARGET_PER_S:.0f} registrations/s sustained (file replica, normal "
        f"acknowledgement), all replicated: {'met' if met else 'MISSED'}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (moto_server) centrals")
    args = parser.parse_args()
    print(run(args.seconds, args.clients, args.rounds, s3=not args.no_s3))


if __name__ == "__main__":
    main()
