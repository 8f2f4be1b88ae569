"""The registry's data layer in-process (no HTTP): what the write path and the reads cost.

* Registrations/s through ``Registry.register_version`` from ``--clients`` concurrent tasks
  (group commit: everything queued meanwhile shares one transaction), beside the same load
  awaited one at a time (a transaction per write) — the baseline, run in the same invocation.
* Read latency (``resolve`` by alias, ``get_model``) on the filled registry, sequential.
* With ``--versions`` versions registered: a search page (no filter / a tag filter), one page
  of ``list_models``, and ``verify_audit`` over the whole event log.

``python -m benchmarks.bench_registry [--versions 100000] [--clients 64]`` prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from modelreg.central.config import CentralConfig
from modelreg.central.registry import Registry

MODELS = 100
SHA = "a" * 64


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _register(reg: Registry, n: int) -> None:
    await reg.register_version(
        "bench",
        f"model-{n % MODELS:03d}",
        artifact_uri=f"s3://bench/{n}.pkl",
        sha256=SHA,
        run_id=f"run-{n}",
        metrics={"auc": 0.9},
        params={"lr": 0.01},
        tags={"env": "prod" if n % 50 == 0 else "dev"},
    )


async def _concurrent(reg: Registry, first: int, count: int, clients: int) -> float:
    """``count`` registrations from ``clients`` tasks; returns registrations/s."""
    queue = iter(range(first, first + count))

    async def client() -> None:
        for n in queue:
            await _register(reg, n)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return count / (time.perf_counter() - started)


async def _sequential(reg: Registry, first: int, count: int) -> float:
    started = time.perf_counter()
    for n in range(first, first + count):
        await _register(reg, n)
    return count / (time.perf_counter() - started)


async def _timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1e3)
    return out


async def _run(versions: int, clients: int, sample: int) -> str:
    root = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    reg = Registry(CentralConfig(data_dir=root))
    await reg.open()
    try:
        for m in range(MODELS):
            await reg.create_model("bench", f"model-{m:03d}")
        # Interleave baseline and group-commit rounds so machine load drifts hit both alike.
        grouped, single = [], []
        n = 0
        for _ in range(3):
            single.append(await _sequential(reg, n, sample // 4))
            n += sample // 4
            grouped.append(await _concurrent(reg, n, sample, clients))
            n += sample
        started = time.perf_counter()
        await _concurrent(reg, n, max(0, versions - n), clients)
        fill_s = time.perf_counter() - started
        await reg.decide("boss", "model-001", 1, True)
        await reg.set_alias("boss", "model-001", "production", 1)
        resolve = await _timed(lambda: reg.resolve("model-001", "production"), 500)
        get_model = await _timed(lambda: reg.get_model("model-001"), 500)
        search_all = await _timed(lambda: reg.search_versions(), 20)
        search_tag = await _timed(lambda: reg.search_versions(tags={"env": "prod"}), 20)
        list_models = await _timed(lambda: reg.list_models(), 20)
        verify = await _timed(reg.verify_audit, 3)
        counts = await reg.counts()
        db = reg.config.registry_db
        db_mb = sum(os.path.getsize(p) for p in (db, db.with_name(db.name + "-wal"))) / 1e6
    finally:
        await reg.close()
        shutil.rmtree(root, ignore_errors=True)
    g, s = statistics.median(grouped), statistics.median(single)
    lines = [
        f"In-process `Registry` on one SQLite file, {counts['versions']} versions in {MODELS}"
        f" models, {counts['events']} events (registry.db + WAL {db_mb:.0f} MB);"
        f" load average {os.getloadavg()[0]:.2f}.",
        "",
        "| what | figure | baseline / note |",
        "|---|---|---|",
        f"| registrations/s, {clients} concurrent tasks (group commit), median of 3 |"
        f" {g:,.0f} | one at a time: {s:,.0f} /s, ratio {g / s:.1f}x |",
        f"| filling to {counts['versions']} versions | {fill_s:.1f} s |"
        f" {max(0, versions - n) / fill_s:,.0f} /s sustained |",
        f"| resolve by alias, p50 / p99 | {_pct(resolve, 0.5):.2f} / {_pct(resolve, 0.99):.2f} ms"
        " | includes the hop to a reader thread |",
        f"| get_model (aliases + latest), p50 | {_pct(get_model, 0.5):.2f} ms | |",
        f"| search, first page of 100, no filter, p50 | {_pct(search_all, 0.5):.1f} ms | |",
        f"| search by tag (2% match), p50 | {_pct(search_tag, 0.5):.1f} ms | |",
        f"| list_models, 100 with latest each, p50 | {_pct(list_models, 0.5):.1f} ms | |",
        f"| verify_audit over {counts['events']} events | {min(verify) / 1e3:.2f} s (best of 3) |"
        " chunks of 10k rows, one short read each |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--sample", type=int, default=4000, help="writes per measured round")
    args = parser.parse_args()
    print(asyncio.run(_run(args.versions, args.clients, args.sample)))


if __name__ == "__main__":
    main()
