"""Fixtures for the sidecar: a registry.db, a local copy seeded into a data dir, a sidecar."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecar.helpers import SidecarProc, short_dir, start_sidecar
from tests.sidecar.registry_db import RegistryDB


def seed_copy(db: RegistryDB, data_dir: Path, number: int = 1) -> Path:
    """Put a complete copy of ``db`` in ``data_dir`` as litestream would leave it.

    The copy is a single rollback-journal file plus its ``-txid`` marker: what
    ``litestream restore`` writes.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"replica-{number}.db"
    dest = sqlite3.connect(path)
    try:
        db.conn.backup(dest)
        dest.execute("PRAGMA journal_mode=DELETE")
    finally:
        dest.close()
    (data_dir / f"replica-{number}.db-txid").write_text("0000000000000001\n")
    return path


def sample_registry(path: Path) -> RegistryDB:
    """fraud (v1 approved @production, v2 @canary, v3 archived), churn (v1), empty."""
    db = RegistryDB(path)
    db.add_model("fraud")
    db.add_version("fraud", "s3://b/fraud/1", status="approved")
    db.add_version("fraud", "s3://b/fraud/2", status="approved")
    db.add_version("fraud", "s3://b/fraud/3", status="archived")
    db.set_alias("fraud", "production", 1)
    db.set_alias("fraud", "canary", 2)
    db.add_model("churn")
    db.add_version("churn", "s3://b/churn/1")
    db.add_model("empty")
    db.heartbeat()
    return db


@pytest.fixture(scope="module")
def offline_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProc]:
    """A sidecar serving a seeded local copy; its replica does not exist (object storage gone).

    Short idle (5 s) and partial-frame (1 s) timeouts, so the defences can be observed.
    """
    base = tmp_path_factory.mktemp("offline")
    db = sample_registry(base / "registry.db")
    sock_dir = short_dir()
    seed_copy(db, sock_dir / "data")
    db.close()
    sidecar = start_sidecar(
        (base / "no-replica").as_uri(),
        sock_dir=sock_dir,
        env={"REG_SIDECAR_IDLE_TIMEOUT_S": "5", "REG_SIDECAR_FRAME_TIMEOUT_S": "1"},
    )
    try:
        yield sidecar
    finally:
        sidecar.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
