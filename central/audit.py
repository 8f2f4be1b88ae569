"""The hash chain of the event log.

Every event row carries ``hash = sha256(prev_hash + canonical_json({revision, at, actor, action,
subject, details}))`` (hex) and the previous row's hash as ``prev_hash``; the first row's
``prev_hash`` is :data:`GENESIS_HASH`. Editing any column of any row, deleting a row or
inserting one breaks the chain at that revision, and :func:`verify` names it.

Pure functions of a ``sqlite3`` connection; no I/O of their own.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from central.records import canonical_json

__all__ = ["GENESIS_HASH", "event_hash", "event_record", "verify"]

#: ``prev_hash`` of revision 1.
GENESIS_HASH = "0" * 64


def event_hash(
    prev_hash: str,
    revision: int,
    at: str,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any],
) -> str:
    """The hash of one event given its predecessor's hash (docs/API.md, "Event")."""
    body = canonical_json(
        {
            "revision": revision,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def event_record(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """An event row (``revision, at, actor, action, subject, details, prev_hash, hash``) as the
    API's event dict."""
    revision, at, actor, action, subject, details, prev_hash, digest = tuple(row)
    try:
        parsed = json.loads(details)
    except (TypeError, ValueError):
        parsed = None
    return {
        "revision": revision,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": parsed if isinstance(parsed, dict) else {},
        "prev_hash": prev_hash,
        "hash": digest,
    }


def verify(conn: sqlite3.Connection) -> dict[str, Any]:
    """Recompute the whole chain; report the first revision that does not hold.

    Returns ``{"ok", "checked", "revision", "first_bad_revision", "message"}`` where ``checked``
    is the number of rows read and ``revision`` the highest revision seen. A row is bad when
    its revision is not the previous one plus 1 (then the missing revision is named), its
    ``prev_hash`` is not the previous row's hash, its ``details`` is not the canonical JSON
    object it was written as, or its ``hash`` does not match its content. Rows cut off the end
    are caught when the heartbeat row has seen a higher revision than the last one left.
    """
    prev_hash = GENESIS_HASH
    expected_revision = 1
    checked = 0
    last = 0
    cursor = conn.execute(
        "SELECT revision, at, actor, action, subject, details, prev_hash, hash "
        "FROM events ORDER BY revision"
    )
    for revision, at, actor, action, subject, details, row_prev, row_hash in cursor:
        checked += 1
        last = revision
        problem = _check_row(
            expected_revision,
            prev_hash,
            (revision, at, actor, action, subject, details, row_prev, row_hash),
        )
        if problem is not None:
            # A gap names the revision that went missing; any other fault the row itself.
            bad = revision if revision == expected_revision else expected_revision
            return {
                "ok": False,
                "checked": checked,
                "revision": last,
                "first_bad_revision": bad,
                "message": f"revision {bad}: {problem}",
            }
        prev_hash = row_hash
        expected_revision += 1
    # The heartbeat row records the revision at its last update: a higher one than the log's
    # last means rows were cut off the end of the log.
    beat = conn.execute("SELECT revision FROM heartbeat WHERE id = 1").fetchone()
    if beat is not None and isinstance(beat[0], int) and beat[0] > last:
        return {
            "ok": False,
            "checked": checked,
            "revision": last,
            "first_bad_revision": last + 1,
            "message": f"revision {last + 1}: missing (the heartbeat saw revision {beat[0]})",
        }
    return {
        "ok": True,
        "checked": checked,
        "revision": last,
        "first_bad_revision": None,
        "message": f"hash chain intact over {checked} events",
    }


def _check_row(expected_revision: int, prev_hash: str, row: tuple[Any, ...]) -> str | None:
    revision, at, actor, action, subject, details, row_prev, row_hash = row
    if revision != expected_revision:
        return f"revision out of sequence (expected {expected_revision})"
    if row_prev != prev_hash:
        return "prev_hash does not match the previous event's hash"
    if not all(isinstance(v, str) for v in (at, actor, action, subject, details, row_hash)):
        return "a column holds a value of the wrong type"
    try:
        parsed = json.loads(details)
    except ValueError:
        return "details is not valid JSON"
    if not isinstance(parsed, dict):
        return "details is not a JSON object"
    if canonical_json(parsed) != details:
        # Written canonical: any edit, even one that keeps the meaning, is tampering.
        return "details is not in the canonical form it was written in"
    if event_hash(prev_hash, revision, at, actor, action, subject, parsed) != row_hash:
        return "hash does not match the event's content"
    return None
