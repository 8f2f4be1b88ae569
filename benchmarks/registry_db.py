"""Build a registry.db of any size for the sidecar benchmarks, without going through central.

The schema comes from :mod:`modelreg.central.schema` (the same migrations central runs); rows are
bulk inserted in one transaction, shaped like real ones (lineage, params, metrics, tags, approvals,
``production`` and ``staging`` aliases, one event per version, a heartbeat). Event hashes are
distinct placeholders (:func:`event_hash`), not a real chain: the sidecar only compares them to
tell a continued history from a replaced one; central's ``audit verify`` would refuse them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from modelreg.central.records import now
from modelreg.central.schema import migrate

__all__ = ["BuiltRegistry", "build_registry", "event_hash", "touch_heartbeat"]


def event_hash(revision: int) -> str:
    """The placeholder hash of event ``revision`` ("" before the first)."""
    return hashlib.sha256(f"bench-event-{revision}".encode()).hexdigest() if revision else ""


@dataclass(frozen=True)
class BuiltRegistry:
    path: Path
    models: int
    versions: int
    revision: int

    def model_name(self, i: int) -> str:
        return f"model-{i:05d}"


def build_registry(path: Path, models: int = 1000, versions_per_model: int = 100) -> BuiltRegistry:
    """Create ``path`` with ``models`` models of ``versions_per_model`` versions each.

    Every model gets ``production`` -> its middle version (approved) and ``staging`` -> its
    last. Returns the counts and the registry revision (one event per inserted row group).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
        at = now()
        conn.execute("BEGIN IMMEDIATE")
        model_rows = []
        version_rows = []
        alias_rows = []
        for m in range(models):
            model_id = m + 1
            model_rows.append(
                (
                    model_id,
                    f"model-{m:05d}",
                    f"benchmark model {m}",
                    "team-bench",
                    json.dumps({"team": "bench", "tier": str(m % 3)}),
                    "bench",
                    at,
                    at,
                    versions_per_model,
                )
            )
            for v in range(1, versions_per_model + 1):
                digest = hashlib.sha256(f"{m}/{v}".encode()).hexdigest()
                approved = v == (versions_per_model + 1) // 2
                version_rows.append(
                    (
                        model_id,
                        v,
                        f"s3://models/model-{m:05d}/{v}/model.onnx",
                        digest,
                        10_000_000 + v,
                        "onnx",
                        f"run-{m}-{v}",
                        digest[:40],
                        f"s3://datasets/ds-{m}/{v}",
                        digest,
                        v - 1 if v > 1 else None,
                        json.dumps({"lr": 0.001 * v, "epochs": 10, "layers": 4}),
                        json.dumps({"auc": 0.9 + v / 1e4, "loss": 0.1}),
                        "trainer",
                        at,
                        "",
                        json.dumps({"git_branch": "main"}),
                        "approved" if approved else "registered",
                        "approved" if approved else None,
                        "approver" if approved else None,
                        at if approved else None,
                        "looks good" if approved else None,
                    )
                )
            alias_rows.append(
                (model_id, "production", (versions_per_model + 1) // 2, "deployer", at)
            )
            alias_rows.append((model_id, "staging", versions_per_model, "deployer", at))
        conn.executemany(
            "INSERT INTO models (id, name, description, owner, tags, created_by, created_at,"
            " updated_at, last_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            model_rows,
        )
        conn.executemany(
            "INSERT INTO versions (model_id, version, artifact_uri, sha256, size, format, run_id,"
            " code_commit, dataset_uri, dataset_digest, parent_version, params, metrics,"
            " created_by, created_at, description, tags, status, decision, decided_by,"
            " decided_at, decision_comment) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            version_rows,
        )
        revision = len(model_rows) + len(version_rows) + len(alias_rows)
        conn.executemany(
            "INSERT INTO aliases (model_id, name, version, updated_by, updated_at, revision)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(*row, revision) for row in alias_rows],
        )
        conn.executemany(
            "INSERT INTO events (revision, at, actor, action, subject, details, prev_hash, hash)"
            " VALUES (?, ?, 'bench', 'bench.insert', 'bench', '{}', ?, ?)",
            [(r, at, event_hash(r - 1), event_hash(r)) for r in range(1, revision + 1)],
        )
        conn.execute("INSERT INTO heartbeat (id, at, revision) VALUES (1, ?, ?)", (at, revision))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return BuiltRegistry(path, models, models * versions_per_model, revision)


def touch_heartbeat(path: Path) -> None:
    """Set the heartbeat to now (a copy built minutes ago is otherwise reported stale)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("UPDATE heartbeat SET at = ? WHERE id = 1", (now(),))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
