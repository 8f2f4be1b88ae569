"""Record types: how a row of ``registry.db`` becomes the dict that every API answers with.

Central's REST API and the sidecar's index both build their answers here, so a version looks
the same whichever process a caller asked. Pure functions, no I/O.

A version record::

    {"model": "fraud", "version": 3, "status": "approved",
     "artifact": {"uri", "sha256", "size", "format"},
     "lineage": {"run_id", "commit", "dataset_uri", "dataset_digest", "parent_version"},
     "params": {...}, "metrics": {...}, "tags": {...}, "description": "...",
     "created_by": "...", "created_at": "...",
     "decision": {"status", "by", "at", "comment"} | None,
     "archived": {"by", "at", "reason"} | None,
     "aliases": ["production", ...]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = [
    "IMMUTABLE_VERSION_FIELDS",
    "REGISTRATION_FIELDS",
    "TIME_FORMAT",
    "VERSION_COLUMNS",
    "VERSION_SELECT",
    "canonical_json",
    "format_time",
    "model_record",
    "now",
    "parse_time",
    "version_record",
]

#: The one stored time format: fixed width, UTC, microseconds, so string order is time order.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: Version fields fixed at registration (a retry must carry the same values).
IMMUTABLE_VERSION_FIELDS = (
    "artifact_uri",
    "sha256",
    "size",
    "format",
    "run_id",
    "commit",
    "dataset_uri",
    "dataset_digest",
    "parent_version",
    "params",
    "metrics",
)
#: Every field a registration (``POST /v1/models/{model}/versions``) may carry.
REGISTRATION_FIELDS = (*IMMUTABLE_VERSION_FIELDS, "tags", "description", "idempotency_key")

#: The ``versions`` columns :func:`version_record` reads, in ``SELECT`` order; ``name`` is the
#: model name joined from ``models``.
VERSION_COLUMNS = (
    "m.name",
    "v.version",
    "v.status",
    "v.artifact_uri",
    "v.sha256",
    "v.size",
    "v.format",
    "v.run_id",
    "v.code_commit",
    "v.dataset_uri",
    "v.dataset_digest",
    "v.parent_version",
    "v.params",
    "v.metrics",
    "v.tags",
    "v.description",
    "v.created_by",
    "v.created_at",
    "v.decision",
    "v.decided_by",
    "v.decided_at",
    "v.decision_comment",
    "v.archived_by",
    "v.archived_at",
    "v.archive_reason",
)

#: ``SELECT`` clause for :data:`VERSION_COLUMNS`, to be followed by
#: ``FROM versions v JOIN models m ON m.id = v.model_id``.
VERSION_SELECT = "SELECT " + ", ".join(VERSION_COLUMNS)


def now() -> str:
    """The current UTC time in :data:`TIME_FORMAT`."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def format_time(moment: datetime) -> str:
    """``moment`` (aware; naive is taken as UTC) in :data:`TIME_FORMAT`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


#: RFC 3339 ``date-time``: full date, ``T``, full time with seconds, optional fraction, and
#: ``Z`` or a ``±hh:mm`` offset (both letters in either case, as section 5.6 allows).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time with ``Z`` or an offset; the same instant in UTC.

    Nothing else is taken: no date alone, no time without an offset (which zone?), no ISO
    week dates or basic format, nothing outside years 1-9999 once in UTC. Fractions below a
    microsecond are dropped. Raises ``ValueError`` with a message fit for a user.
    """
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"not an RFC 3339 time with an offset: {str(text)[:80]!r} "
            "(expected e.g. 2026-11-27T09:30:00Z or 2026-11-27T10:30:00+01:00)"
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, off_hours, off_minutes = match.groups()[6:]
    try:
        if zulu:
            offset = timedelta(0)
        else:
            if int(off_hours) > 23 or int(off_minutes) > 59:
                raise ValueError("offset")
            offset = timedelta(hours=int(off_hours), minutes=int(off_minutes))
            offset = -offset if sign == "-" else offset
        micro = int((fraction or "0").ljust(6, "0")[:6])
        local = datetime(year, month, day, hour, minute, second, micro, timezone(offset))
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            f"not a valid time: {text[:80]!r} (a real date and time, years 0001-9999 in UTC)"
        ) from None


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form hashed into the event chain."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_obj(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def version_record(row: Sequence[Any], aliases: Sequence[str] = ()) -> dict[str, Any]:
    """The version record for one row selected with :data:`VERSION_SELECT`."""
    (
        model,
        version,
        status,
        uri,
        sha256,
        size,
        fmt,
        run_id,
        commit,
        dataset_uri,
        dataset_digest,
        parent,
        params,
        metrics,
        tags,
        description,
        created_by,
        created_at,
        decision,
        decided_by,
        decided_at,
        decision_comment,
        archived_by,
        archived_at,
        archive_reason,
    ) = row
    return {
        "model": model,
        "version": version,
        "status": status,
        "artifact": {"uri": uri, "sha256": sha256, "size": size, "format": fmt},
        "lineage": {
            "run_id": run_id,
            "commit": commit,
            "dataset_uri": dataset_uri,
            "dataset_digest": dataset_digest,
            "parent_version": parent,
        },
        "params": _json_obj(params),
        "metrics": _json_obj(metrics),
        "tags": _json_obj(tags),
        "description": description,
        "created_by": created_by,
        "created_at": created_at,
        "decision": (
            {"status": decision, "by": decided_by, "at": decided_at, "comment": decision_comment}
            if decision
            else None
        ),
        "archived": (
            {"by": archived_by, "at": archived_at, "reason": archive_reason}
            if archived_at
            else None
        ),
        "aliases": sorted(aliases),
    }


def model_record(
    row: Mapping[str, Any],
    aliases: Mapping[str, int],
    latest: dict[str, Any] | None,
) -> dict[str, Any]:
    """A model record: its fields, ``aliases`` (name -> version) and the ``latest`` version.

    ``row`` has the ``models`` columns by name (``sqlite3.Row`` works).
    """
    return {
        "name": row["name"],
        "description": row["description"],
        "owner": row["owner"],
        "tags": _json_obj(row["tags"]),
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "aliases": dict(sorted(aliases.items())),
        "latest": latest,
    }
