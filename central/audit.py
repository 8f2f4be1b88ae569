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
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from modelreg.central.records import canonical_json

__all__ = ["CHUNK_ROWS", "GENESIS_HASH", "Verifier", "event_hash", "event_record", "verify"]

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
    """The hash of one event given its predecessor's hash (docs/API.md, "Event")::

    sha256(prev_hash + canonical_json({revision, at, actor, action, subject, details}))
    """
    return _hash(prev_hash, revision, at, actor, action, subject, canonical_json(details))


def _hash(
    prev_hash: str, revision: int, at: str, actor: str, action: str, subject: str, details: str
) -> str:
    """:func:`event_hash` given ``details`` already in canonical JSON. The body is spelled out
    in :func:`canonical_json`'s form (sorted keys, no spaces) so that verifying does not parse
    and re-serialise every row twice."""
    body = (
        f'{{"action":{_string(action)},"actor":{_string(actor)},"at":{_string(at)},'
        f'"details":{details},"revision":{revision},"subject":{_string(subject)}}}'
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


#: JSON string literal, as ``json.dumps(value, ensure_ascii=False)`` spells it (C speed).
_string: Callable[[str], str] = encode_basestring


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


#: Rows one :meth:`Verifier.step` reads (one short read transaction each).
CHUNK_ROWS = 10_000


class Verifier:
    """Recomputes the chain in chunks, so that no read transaction lasts long (a long one
    would hold back Litestream's checkpoints). Events are append-only, so checking
    ``revision > last`` in later snapshots continues the same chain.

    Call :meth:`step` until it returns the result dict (see :func:`verify`).
    """

    def __init__(self) -> None:
        self.prev_hash = GENESIS_HASH
        self.last = 0
        self.checked = 0

    def step(self, conn: sqlite3.Connection, limit: int = CHUNK_ROWS) -> dict[str, Any] | None:
        """Check up to ``limit`` more rows; the result when done (or broken), else None."""
        query = (
            "SELECT revision, at, actor, action, subject, details, prev_hash, hash"
            " FROM events WHERE revision > ? ORDER BY revision LIMIT ?"
        )
        try:
            rows = conn.execute(query, (self.last, limit)).fetchall()
        except sqlite3.OperationalError:
            # Bytes that are not UTF-8 (a hand-edited row) must name their row, not stop the
            # check: read this chunk again, keeping undecodable bytes as surrogates.
            factory = conn.text_factory
            conn.text_factory = _lenient_text
            try:
                rows = conn.execute(query, (self.last, limit)).fetchall()
            finally:
                conn.text_factory = factory
        for row in rows:
            self.checked += 1
            expected = self.last + 1
            problem = _check_row(expected, self.prev_hash, row)
            if problem is not None:
                # A gap names the revision that went missing; any other fault the row itself.
                bad = row[0] if row[0] == expected else expected
                return self._result(bad, f"revision {bad}: {problem}", row[0])
            self.last, self.prev_hash = row[0], row[7]
        if len(rows) == limit:
            return None
        # The heartbeat row records the revision at its last update: a higher one than the
        # log's last means rows were cut off the end of the log.
        beat = conn.execute("SELECT revision FROM heartbeat WHERE id = 1").fetchone()
        if beat is not None and isinstance(beat[0], int) and beat[0] > self.last:
            bad = self.last + 1
            return self._result(
                bad, f"revision {bad}: missing (the heartbeat saw revision {beat[0]})", self.last
            )
        return self._result(None, f"hash chain intact over {self.checked} events", self.last)

    def _result(self, bad: int | None, message: str, revision: Any) -> dict[str, Any]:
        return {
            "ok": bad is None,
            "checked": self.checked,
            "revision": revision if isinstance(revision, int) else self.last,
            "first_bad_revision": bad,
            "message": message,
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
    verifier = Verifier()
    while True:
        result = verifier.step(conn)
        if result is not None:
            return result


def _check_row(expected_revision: int, prev_hash: str, row: tuple[Any, ...]) -> str | None:
    revision, at, actor, action, subject, details, row_prev, row_hash = row
    if revision != expected_revision:
        return f"revision out of sequence (expected {expected_revision})"
    if row_prev != prev_hash:
        return "prev_hash does not match the previous event's hash"
    if not (
        type(at) is str
        and type(actor) is str
        and type(action) is str
        and type(subject) is str
        and type(details) is str
        and type(row_hash) is str
    ):
        return "a column holds a value of the wrong type"
    try:
        digest = _hash(prev_hash, revision, at, actor, action, subject, details)
    except UnicodeEncodeError:
        return "a column holds bytes that are not UTF-8 text"
    if digest == row_hash:
        # details hashes exactly as written (canonical JSON), so it needs no parsing here.
        return None
    return _diagnose(details)


def _diagnose(details: str) -> str:
    """Why a row's hash does not match, as precisely as the row tells."""
    try:
        parsed = json.loads(details)
    except ValueError:
        return "details is not valid JSON"
    if not isinstance(parsed, dict):
        return "details is not a JSON object"
    if canonical_json(parsed) != details:
        # Written canonical: any edit, even one that keeps the meaning, is tampering.
        return "details is not in the canonical form it was written in"
    return "hash does not match the event's content"


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
