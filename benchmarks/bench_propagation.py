"""Acknowledged write at central -> visible in the replica, and -> answered by a sidecar.

One run measures, side by side for a ``file://`` replica and an S3 replica on moto_server:

* **ack -> replica**: from central's answer to the appearance of a new level-0 LTX file in the
  replica (a directory scan for ``file://``, ``ListObjectsV2`` against moto_server for ``s3://``,
  every 10 ms). Central's heartbeat is off, so only benchmark writes change the database and a
  new LTX file carries the write.
* **ack -> sidecar**: from the same answer to the moment a real ``reg sidecar run`` following that
  replica with the default follow interval (1 s) answers the new version. Each write moves the
  unprotected alias ``bench`` to the other of two versions; a ``Client.watch("prop", "bench")``
  thread timestamps every changed answer the sidecar pushes, and a sample ends when the watch
  has reported the version the write set. ``min_revision`` is not used: the figure is what a
  plain reader of the sidecar sees.

Central runs with its default sync interval (1 s); the sidecar with its default follow interval
(1 s) and ``--stale-after 3600`` (with the heartbeat off its copy would otherwise count as stale
after 30 s and be restored afresh, which a production node with a heartbeat never does). Writes
are spaced by a random 0.2-1.2 s so they do not phase-lock with either ticker. At the end the
replica is restored and must hold the last acknowledged revision. Every process is stopped by
PID.

``python -m benchmarks.bench_propagation [--samples 30] [--sync-interval 1.0]
[--follow-interval 1.0]`` prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3  # type: ignore[import-untyped]

from modelreg.central.client import CentralClient
from modelreg.sidecar.client import Client
from tests.conftest import BUCKET, s3_replica_url
from tests.procs import start_central, start_moto, wait_for
from tests.replication.helpers import replica_revision
from tests.sidecar.helpers import short_dir, start_sidecar

TARGET_P95_S = 2.0
MODEL = "prop"
ALIAS = "bench"
SAMPLE_TIMEOUT_S = 30.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Watcher:
    """A thread that watches ``prop@bench`` on a sidecar and timestamps every changed answer."""

    def __init__(self, socket_path: Path) -> None:
        self.client = Client(socket_path, connect_deadline_s=10.0)
        self.seen: list[tuple[float, int]] = []  # (monotonic time, version)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for record in self.client.watch(MODEL, ALIAS, reconnect_deadline_s=30.0):
                self.seen.append((time.monotonic(), record.version))
        except BaseException as exc:  # reported by seen_at
            self.error = exc

    def seen_at(self, version: int, after: float) -> float | None:
        """When the watch first reported ``version`` at or after ``after``, if it has."""
        if self.error is not None:
            raise RuntimeError(f"the sidecar watch failed: {self.error!r}")
        for at, seen in list(self.seen):
            if at >= after and seen == version:
                return at
        return None

    def close(self) -> None:
        self.client.close()
        self.thread.join(10)


def _measure(
    url: str,
    data: Path,
    samples: int,
    sync_interval: float,
    follow_interval: float,
    listing: Callable[[], set[str]],
) -> tuple[list[float], list[float], bool]:
    """(ack -> replica delays, ack -> sidecar delays, replica restores to the last revision)."""
    central = start_central(data, url, sync_interval=sync_interval, heartbeat_interval=0)
    to_replica: list[float] = []
    to_sidecar: list[float] = []
    try:
        client = CentralClient(central.url, central.admin_token)
        client.create_model(MODEL)
        for n in (1, 2):
            client.push(MODEL, f"s3://bench/{n}.pkl", f"{n:064x}")
        last = int(client.set_alias(MODEL, ALIAS, 1)["revision"])
        sidecar = start_sidecar(
            url,
            data.parent / f"{data.name}-sidecar",
            follow_interval=follow_interval,
            extra_args=("--stale-after", "3600"),
            sock_dir=short_dir("bprop-"),
        )
        watcher: _Watcher | None = None
        try:
            with Client(sidecar.socket) as reader:

                def settled() -> bool:
                    return reader.resolve(MODEL, ALIAS).version == 1

                wait_for(settled, timeout=60, interval=0.1, what="the sidecar's first copy")
            watcher = _Watcher(sidecar.socket)
            time.sleep(sync_interval + 1.0)  # let the set-up writes ship first
            version = 1
            for _ in range(samples):
                version = 3 - version
                before = listing()
                record = client.set_alias(MODEL, ALIAS, version)
                acked = time.monotonic()
                last = int(record["revision"])
                replica_at: float | None = None
                sidecar_at: float | None = None
                while replica_at is None or sidecar_at is None:
                    now = time.monotonic()
                    if now - acked > SAMPLE_TIMEOUT_S:
                        raise RuntimeError(
                            f"revision {last} not visible after {SAMPLE_TIMEOUT_S} s "
                            f"(replica {replica_at}, sidecar {sidecar_at}):\n{sidecar.log()}"
                        )
                    if replica_at is None and listing() - before:
                        replica_at = time.monotonic()
                    if sidecar_at is None:
                        sidecar_at = watcher.seen_at(version, acked)
                    time.sleep(0.01)
                to_replica.append(replica_at - acked)
                to_sidecar.append(sidecar_at - acked)
                time.sleep(random.uniform(0.2, 1.2))
        finally:
            if watcher is not None:
                watcher.close()
            sidecar.stop()
        ok = replica_revision(url, data.parent / f"{data.name}-probe") >= last
    finally:
        central.stop()
    return to_replica, to_sidecar, ok


def _row(kind: str, leg: str, delays: list[float], ok: bool) -> str:
    p50, p95 = _percentile(delays, 0.5), _percentile(delays, 0.95)
    return (
        f"| {kind} | {leg} | {len(delays)} | {p50:.2f} | {p95:.2f} | {max(delays):.2f} | "
        f"{'yes' if ok else 'NO'} |"
    )


def run(samples: int, sync_interval: float, follow_interval: float) -> str:
    root = Path(tempfile.mkdtemp(prefix="bench-prop-"))
    rows: list[str] = []
    verdicts: list[str] = []
    try:
        replica = root / "replica"
        level0 = replica / "registry" / "ltx" / "0"

        def file_listing() -> set[str]:
            try:
                return set(os.listdir(level0))
            except FileNotFoundError:
                return set()

        results = {
            "file": _measure(
                f"file://{replica}",
                root / "f",
                samples,
                sync_interval,
                follow_interval,
                file_listing,
            )
        }
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ.setdefault("AWS_REGION", "us-east-1")
        moto = start_moto()
        try:
            moto.create_bucket(BUCKET)
            url = s3_replica_url(moto, "prop")
            s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")

            def s3_listing() -> set[str]:
                page = s3.list_objects_v2(Bucket=BUCKET, Prefix="prop/registry/0000/")
                return {obj["Key"] for obj in page.get("Contents", [])}

            results["s3 (moto_server)"] = _measure(
                url, root / "s", samples, sync_interval, follow_interval, s3_listing
            )
        finally:
            moto.close()
        for kind, (replica_delays, sidecar_delays, ok) in results.items():
            rows.append(_row(kind, "ack -> replica", replica_delays, ok))
            rows.append(_row(kind, "ack -> sidecar answers", sidecar_delays, ok))
            p95 = _percentile(sidecar_delays, 0.95)
            verdicts.append(
                f"{kind}: p95 {p95:.2f} s, {'met' if p95 <= TARGET_P95_S else 'MISSED'}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return "\n".join(
        [
            f"sync interval {sync_interval:g} s, sidecar follow interval {follow_interval:g} s, "
            "heartbeat off, one alias move at a time; seconds from the write's acknowledgement "
            "to its LTX file in the replica, and to the sidecar's watch answering the new version.",
            "",
            "| replica | leg | samples | p50 s | p95 s | max s | replica restores to last "
            "revision |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"target write -> visible on a sidecar p95 <= {TARGET_P95_S:g} s with default "
            f"intervals: {'; '.join(verdicts)}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--sync-interval", type=float, default=1.0)
    parser.add_argument("--follow-interval", type=float, default=1.0)
    args = parser.parse_args()
    print(run(args.samples, args.sync_interval, args.follow_interval))


if __name__ == "__main__":
    main()
