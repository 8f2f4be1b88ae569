"""Build a ``registry.db`` directly: ``modelreg.central.schema.migrate`` plus plain inserts.

The sidecar only reads the file, so its tests need no central: this writer produces the same
rows central would (one event per write, a heartbeat row), without the policy checks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelreg.central.records import TIME_FORMAT, now
from modelreg.central.schema import migrate

__all__ = ["RegistryDB"]


class RegistryDB:
    """A writable registry.db in WAL mode; every mutation appends an event (the revision)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        migrate(self.conn)

    def close(self) -> None:
        self.conn.close()

    @property
    def revision(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(revision), 0) FROM events").fetchone()[0])

    def _event(self, action: str, subject: str) -> int:
        revision = self.revision + 1
        digest = hashlib.sha256(f"{revision}{action}{subject}".encode()).hexdigest()
        self.conn.execute(
            "INSERT INTO events (revision, at, actor, action, subject, details, prev_hash, hash)"
            " VALUES (?, ?, 'test', ?, ?, '{}', ?, ?)",
            (revision, now(), action, subject, "0" * 64, digest),
        )
        return revision

    def _model_id(self, name: str) -> int:
        return int(self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()[0])

    def add_model(
        self, name: str, description: str = "", tags: dict[str, Any] | None = None
    ) -> int:
        """Create a model; returns the new revision."""
        at = now()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "INSERT INTO models (name, description, owner, tags, created_by, created_at,"
            " updated_at) VALUES (?, ?, '', ?, 'test', ?, ?)",
            (name, description, json.dumps(tags or {}), at, at),
        )
        revision = self._event("model.create", name)
        self.conn.execute("COMMIT")
        return revision

    def add_version(
        self,
        model: str,
        uri: str = "s3://bucket/model.bin",
        status: str = "registered",
        params: dict[str, Any] | None = None,
        description: str = "",
    ) -> int:
        """Register the model's next version (with ``status``); returns its number."""
        self.conn.execute("BEGIN IMMEDIATE")
        model_id = self._model_id(model)
        number = (
            int(
                self.conn.execute(
                    "SELECT last_version FROM models WHERE id = ?", (model_id,)
                ).fetchone()[0]
            )
            + 1
        )
        self.conn.execute("UPDATE models SET last_version = ? WHERE id = ?", (number, model_id))
        at = now()
        approved = status in ("approved", "rejected")
        self.conn.execute(
            "INSERT INTO versions (model_id, version, artifact_uri, sha256, size, format,"
            " params, created_by, created_at, description, status, decision, decided_by,"
            " decided_at, archived_by, archived_at) VALUES"
            " (?, ?, ?, ?, 123, 'onnx', ?, 'test', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                model_id,
                number,
                uri,
                hashlib.sha256(f"{model}{number}".encode()).hexdigest(),
                json.dumps(params or {}),
                at,
                description,
                status,
                status if approved else None,
                "approver" if approved else None,
                at if approved else None,
                "admin" if status == "archived" else None,
                at if status == "archived" else None,
            ),
        )
        self._event("version.register", f"{model}/{number}")
        self.conn.execute("COMMIT")
        return number

    def set_alias(self, model: str, alias: str, version: int) -> int:
        """Point ``alias`` at ``version``; returns the new revision."""
        self.conn.execute("BEGIN IMMEDIATE")
        revision = self._event("alias.set", f"{model}@{alias}")
        self.conn.execute(
            "INSERT INTO aliases (model_id, name, version, updated_by, updated_at, revision)"
            " VALUES (?, ?, ?, 'test', ?, ?) ON CONFLICT (model_id, name) DO UPDATE SET"
            " version = excluded.version, revision = excluded.revision",
            (self._model_id(model), alias, version, now(), revision),
        )
        self.conn.execute("COMMIT")
        return revision

    def heartbeat(self, age_s: float = 0.0) -> None:
        """Write the heartbeat row as if central wrote it ``age_s`` seconds ago (no event)."""
        at = (datetime.now(UTC) - timedelta(seconds=age_s)).strftime(TIME_FORMAT)
        self.conn.execute(
            "INSERT INTO heartbeat (id, at, revision) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET at = excluded.at, revision = excluded.revision",
            (at, self.revision),
        )
