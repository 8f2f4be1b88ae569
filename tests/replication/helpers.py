"""Helpers for the replication tests: restore a replica, read a database's rows and revision."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelreg.central.client import CentralClient
from modelreg.central.replication import litestream_env, replica_url

LITESTREAM = str(Path(sys.executable).parent / "litestream")
DIGEST = "ab" * 32


def restore(base_url: str, name: str, target: Path) -> Path | None:
    """Restore database ``name`` of replica ``base_url`` into ``target``; None if empty."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    url = replica_url(base_url, name)
    result = subprocess.run(
        [LITESTREAM, "restore", "-if-replica-exists", "-o", str(target), url],
        env=litestream_env(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    return target if target.exists() else None


def revision(path: Path) -> int:
    """The registry revision (highest event) of a registry.db file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COALESCE(MAX(revision), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


def replica_revision(base_url: str, scratch: Path) -> int:
    """The registry revision held by the replica right now (0 when it is empty)."""
    restored = restore(base_url, "registry", scratch / "probe.db")
    return 0 if restored is None else revision(restored)


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a database file, sorted: contents, not bytes."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in sorted(tables)
        }
    finally:
        conn.close()


def copy_db(data_dir: Path, target_dir: Path) -> None:
    """Copy a stopped central's data directory (databases, WAL and all)."""
    shutil.copytree(data_dir, target_dir)


def burst(client: CentralClient, model: str, count: int) -> int:
    """Create ``model`` and register ``count`` versions; the last acknowledged revision."""
    last = client.create_model(model, description="replicated")["revision"]
    for n in range(count):
        record, created = client.push(
            model, f"s3://bucket/{model}/{n}.pkl", f"{n:064x}", run_id=f"run-{n}"
        )
        assert created
        last = record["revision"]
    return int(last)
