"""Central's write throughput: registrations/s from concurrent clients, each acknowledged after
commit, then checked to be in the replica.

Runs the same load side by side against central with replication (the embedded default: a
``file://`` replica, litestream syncing every second) and with ``--replica none``, so the ratio
shows what replication costs. After the replicated run it waits until the replica holds the
last acknowledged revision and restores it to count the versions: every acknowledged
registration must be there.

``python -m benchmarks.bench_central_writes [--seconds 10] [--clients 32]`` prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.procs import CentralProc, start_central, wait_for
from tests.replication.helpers import restore

TARGET_PER_S = 500.0
MODELS = 4


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _load(central: CentralProc, seconds: float, clients: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {central.admin_token}"}
    latencies: list[float] = []
    errors = 0
    last_revision = 0
    counter = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(central.url, headers=headers, connector=connector) as http:
        for m in range(MODELS):
            async with http.post("/v1/models", json={"name": f"bench-{m}"}) as response:
                assert response.status == 201, await response.text()
        deadline = time.monotonic() + seconds

        async def client(worker: int) -> None:
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
                async with http.post(f"/v1/models/bench-{n % MODELS}/versions", json=body) as r:
                    answer = await r.json()
                if r.status != 201:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                last_revision = max(last_revision, int(answer["revision"]))

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.monotonic() - started
    return {
        "acked": len(latencies),
        "errors": errors,
        "elapsed": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.5) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "last_revision": last_revision,
    }


def _count_versions(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        versions = conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
        revision = conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]
        return int(versions), int(revision)
    finally:
        conn.close()


def run(seconds: float, clients: int) -> str:
    root = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    results: dict[str, dict[str, Any]] = {}
    drain_s = float("nan")
    replicated_ok = False
    restored_versions = 0
    try:
        for kind in ("replicated", "none"):
            replica = f"file://{root / kind / 'replica'}" if kind == "replicated" else "none"
            central = start_central(
                root / kind / "data", replica, sync_interval=1.0, heartbeat_interval=2.0
            )
            try:
                results[kind] = asyncio.run(_load(central, seconds, clients))
                if kind == "replicated":
                    last = results[kind]["last_revision"]
                    probe = root / "probe" / "registry.db"
                    acked_at = time.monotonic()

                    def replicated(
                        last: int = last, base: str = replica, probe: Path = probe
                    ) -> bool:
                        restored = restore(base, "registry", probe)
                        return restored is not None and _count_versions(restored)[1] >= last

                    wait_for(replicated, timeout=60, interval=0.2, what="the replica")
                    drain_s = time.monotonic() - acked_at
                    restored_versions = _count_versions(probe)[0]
                    replicated_ok = restored_versions == results[kind]["acked"]
            finally:
                central.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rep, none = results["replicated"], results["none"]
    met = rep["rate"] >= TARGET_PER_S and replicated_ok and not rep["errors"]
    verdict = "met" if met else "MISSED"
    runs = (("file replica, sync 1 s", rep), ("--replica none (baseline)", none))
    return "\n".join(
        [
            f"{clients} concurrent clients (aiohttp, keep-alive), {seconds:.0f} s per run, "
            f"{MODELS} models; central and the clients share the machine.",
            "",
            "| run | acknowledged | errors | registrations/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {r['acked']} | {r['errors']} | {r['rate']:.0f} | "
                f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
                for name, r in runs
            ),
            "",
            f"replicated / baseline throughput: {rep['rate'] / none['rate']:.2f}",
            f"replica holds the last acknowledged revision {drain_s:.2f} s after the load ended; "
            f"restored versions {restored_versions} of {rep['acked']} acknowledged "
            f"({'all present' if replicated_ok else 'MISSING WRITES'})",
            f"target >= {TARGET_PER_S:.0f} registrations/s, all replicated: {verdict}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    print(run(args.seconds, args.clients))


if __name__ == "__main__":
    main()
