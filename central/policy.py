"""The domain rules: every mutation of the registry as a plain function.

Each function takes the write connection and the :class:`modelreg.central.store.WriteContext` first,
checks its rule against the database, changes rows and appends exactly one event with
``ctx.append_event`` — or raises a class of :mod:`modelreg.errors` having changed nothing (the
store rolls the write back). They run only through ``Store.write``; arguments are already
validated by :mod:`modelreg.central.validate`.

Rules (docs/ARCHITECTURE.md, "Data model"):

* version numbers are ``models.last_version + 1``, and ``last_version`` never decreases, so a
  number is never reused, even after archive;
* status: ``registered -> approved | rejected``; any -> ``archived``; four eyes: whoever
  registered a version may not decide on it (when enabled);
* an alias points only at an existing, non-archived version; a protected alias only at an
  approved one; ``expected`` (compare-and-set) must equal the current target;
* archiving a version an alias points at is refused;
* rollback re-points an alias to its previous target that is still approved. The alias's
  targets form a stack: a move pushes its target (an unset alias pushes "nothing"), a rollback
  pops back to the target it chose. So rolling back twice goes two steps back, never forth.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from modelreg.central import queries
from modelreg.central.records import IMMUTABLE_VERSION_FIELDS, canonical_json, version_record
from modelreg.central.store import WriteContext
from modelreg.errors import (
    AliasConflict,
    AliasNotFound,
    AlreadyExists,
    FourEyesViolation,
    InvalidField,
    InvalidTransition,
    NotApproved,
    NothingToRollBack,
    VersionInUse,
)

__all__ = [
    "IMMUTABLE_FIELDS",
    "UNSET",
    "Unset",
    "archive",
    "create_model",
    "decide",
    "delete_alias",
    "heartbeat",
    "record_token",
    "record_webhook",
    "register_version",
    "rollback_alias",
    "rollback_target",
    "set_alias",
    "update_model",
    "update_version",
]


class Unset:
    """Type of :data:`UNSET`: "no ``expected`` given" (``None`` means "expected unset")."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = Unset()

#: Version fields fixed at registration; a retry must carry the same values.
IMMUTABLE_FIELDS = IMMUTABLE_VERSION_FIELDS


def _with_revision(record: dict[str, Any], ctx: WriteContext) -> dict[str, Any]:
    """``record`` with the revision of this write's event and its chain hash (the registry's
    current ones when the write appended no event: an idempotent retry)."""
    if ctx.event is not None:
        record["revision"], record["revision_hash"] = ctx.event["revision"], ctx.event["hash"]
    else:
        record["revision"], record["revision_hash"] = ctx.last_revision, ctx.last_hash
    return record


# -- models ----------------------------------------------------------------------------------


def create_model(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    name: str,
    description: str,
    owner: str,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Create a model; raises :class:`AlreadyExists` when the name is taken."""
    if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone():
        raise AlreadyExists(f"model {name!r} already exists", model=name)
    conn.execute(
        "INSERT INTO models (name, description, owner, tags, created_by, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, description, owner, canonical_json(tags), actor, ctx.at, ctx.at),
    )
    details = {"description": description, "owner": owner, "tags": tags}
    ctx.append_event(conn, actor, "model.create", name, details)
    return _with_revision(queries.get_model(conn, name), ctx)


def update_model(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    name: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Change a model's description, owner and/or tags (``changes`` holds only given ones)."""
    row = queries.model_row(conn, name)
    stored = {k: canonical_json(v) if k == "tags" else v for k, v in changes.items()}
    assignments = "".join(f"{column} = ?, " for column in stored)
    conn.execute(
        f"UPDATE models SET {assignments}updated_at = ? WHERE id = ?",
        (*stored.values(), ctx.at, row["id"]),
    )
    ctx.append_event(conn, actor, "model.update", name, changes)
    return _with_revision(queries.get_model(conn, name), ctx)


# -- versions --------------------------------------------------------------------------------


def _immutable(record: dict[str, Any]) -> dict[str, Any]:
    """A version record's immutable fields, named like :data:`IMMUTABLE_FIELDS`."""
    artifact, lineage = record["artifact"], record["lineage"]
    return {
        "artifact_uri": artifact["uri"],
        "sha256": artifact["sha256"],
        "size": artifact["size"],
        "format": artifact["format"],
        "run_id": lineage["run_id"],
        "commit": lineage["commit"],
        "dataset_uri": lineage["dataset_uri"],
        "dataset_digest": lineage["dataset_digest"],
        "parent_version": lineage["parent_version"],
        "params": record["params"],
        "metrics": record["metrics"],
    }


def register_version(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    fields: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Register the next version of ``model``; ``(record, created)``.

    ``fields`` has every key of :data:`IMMUTABLE_FIELDS` plus ``tags``, ``description`` and
    ``idempotency_key``. A retry (same ``idempotency_key``, or same ``run_id`` and ``sha256``)
    with the same immutable fields returns the existing version with ``created=False`` and
    writes nothing; with different ones it raises :class:`AlreadyExists`. Raises
    :class:`ModelNotFound`, and :class:`InvalidField` for a ``parent_version`` that does not
    exist.
    """
    row = queries.model_row(conn, model)
    candidates = queries.versions_by_key(
        conn, row["id"], fields["idempotency_key"], fields["run_id"], fields["sha256"]
    )
    wanted = {key: fields[key] for key in IMMUTABLE_FIELDS}
    for candidate in candidates:
        existing = queries.record(conn, row, int(candidate[1]))
        same_key = (
            fields["idempotency_key"] is not None and candidate[-1] == fields["idempotency_key"]
        )
        if _immutable(existing) == wanted:
            return _with_revision(existing, ctx), False
        if same_key:
            differing = sorted(k for k, v in _immutable(existing).items() if wanted[k] != v)
            raise AlreadyExists(
                f"idempotency key {fields['idempotency_key']!r} was used for version "
                f"{existing['version']} of {model!r} with different " + ", ".join(differing),
                model=model,
                version=existing["version"],
                field=differing[0],
            )
    if candidates:
        first = queries.record(conn, row, int(candidates[0][1]))
        differing = sorted(k for k, v in _immutable(first).items() if wanted[k] != v)
        raise AlreadyExists(
            f"run {fields['run_id']!r} already registered this artifact as version "
            f"{first['version']} of {model!r} with different " + ", ".join(differing),
            model=model,
            version=first["version"],
            field=differing[0],
        )
    parent = fields["parent_version"]
    if parent is not None and parent > row["last_version"]:
        raise InvalidField(
            f"parent_version {parent} does not exist in model {model!r}",
            field="parent_version",
            model=model,
            version=parent,
        )
    number = row["last_version"] + 1
    conn.execute(
        "INSERT INTO versions (model_id, version, artifact_uri, sha256, size, format, run_id,"
        " code_commit, dataset_uri, dataset_digest, parent_version, params, metrics,"
        " created_by, created_at, idempotency_key, description, tags)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row["id"],
            number,
            fields["artifact_uri"],
            fields["sha256"],
            fields["size"],
            fields["format"],
            fields["run_id"],
            fields["commit"],
            fields["dataset_uri"],
            fields["dataset_digest"],
            parent,
            canonical_json(fields["params"]),
            canonical_json(fields["metrics"]),
            actor,
            ctx.at,
            fields["idempotency_key"],
            fields["description"],
            canonical_json(fields["tags"]),
        ),
    )
    conn.execute("UPDATE models SET last_version = ? WHERE id = ?", (number, row["id"]))
    # Built from what was just inserted rather than read back: this is the hot write path.
    record = version_record(
        (
            model,
            number,
            "registered",
            fields["artifact_uri"],
            fields["sha256"],
            fields["size"],
            fields["format"],
            fields["run_id"],
            fields["commit"],
            fields["dataset_uri"],
            fields["dataset_digest"],
            parent,
            None,
            None,
            None,
            fields["description"],
            actor,
            ctx.at,
            *(None,) * 7,
        )
    )
    record.update(params=fields["params"], metrics=fields["metrics"], tags=fields["tags"])
    details = {
        "version": number,
        "artifact_uri": fields["artifact_uri"],
        "sha256": fields["sha256"],
        "run_id": fields["run_id"],
    }
    ctx.append_event(conn, actor, "version.register", f"{model}/{number}", details)
    return _with_revision(record, ctx), True


def update_version(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    version: int,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Change a version's description and/or tags (its only mutable fields besides status)."""
    row = queries.model_row(conn, model)
    queries.version_row(conn, row, version)
    stored = {k: canonical_json(v) if k == "tags" else v for k, v in changes.items()}
    if stored:
        assignments = ", ".join(f"{column} = ?" for column in stored)
        conn.execute(
            f"UPDATE versions SET {assignments} WHERE model_id = ? AND version = ?",
            (*stored.values(), row["id"], version),
        )
    ctx.append_event(conn, actor, "version.update", f"{model}/{version}", changes)
    return _with_revision(queries.record(conn, row, version), ctx)


def decide(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    version: int,
    approve: bool,
    comment: str,
    four_eyes: bool,
) -> dict[str, Any]:
    """Approve or reject a registered version.

    Raises :class:`InvalidTransition` unless its status is ``registered``, and
    :class:`FourEyesViolation` when ``four_eyes`` and ``actor`` registered it.
    """
    row = queries.model_row(conn, model)
    current = queries.record(conn, row, version)
    status = "approved" if approve else "rejected"
    if current["status"] != "registered":
        raise InvalidTransition(
            f"version {version} of {model!r} is {current['status']}; only a registered "
            f"version can be {status}",
            model=model,
            version=version,
            expected="registered",
            actual=current["status"],
        )
    if four_eyes and current["created_by"] == actor:
        raise FourEyesViolation(
            f"{actor!r} registered version {version} of {model!r} and cannot also decide on "
            "it (four eyes)",
            model=model,
            version=version,
        )
    conn.execute(
        "UPDATE versions SET status = ?, decision = ?, decided_by = ?, decided_at = ?,"
        " decision_comment = ? WHERE model_id = ? AND version = ?",
        (status, status, actor, ctx.at, comment, row["id"], version),
    )
    action = "version.approve" if approve else "version.reject"
    ctx.append_event(conn, actor, action, f"{model}/{version}", {"comment": comment})
    return _with_revision(queries.record(conn, row, version), ctx)


def archive(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    version: int,
    reason: str,
) -> dict[str, Any]:
    """Archive a version. Raises :class:`InvalidTransition` when it already is, and
    :class:`VersionInUse` while an alias points at it."""
    row = queries.model_row(conn, model)
    current = queries.record(conn, row, version)
    if current["status"] == "archived":
        raise InvalidTransition(
            f"version {version} of {model!r} is already archived",
            model=model,
            version=version,
            actual="archived",
        )
    if current["aliases"]:
        raise VersionInUse(
            f"version {version} of {model!r} is the target of "
            + ", ".join(current["aliases"])
            + "; move those aliases first",
            model=model,
            version=version,
            aliases=current["aliases"],
        )
    conn.execute(
        "UPDATE versions SET status = 'archived', archived_by = ?, archived_at = ?,"
        " archive_reason = ? WHERE model_id = ? AND version = ?",
        (actor, ctx.at, reason, row["id"], version),
    )
    ctx.append_event(conn, actor, "version.archive", f"{model}/{version}", {"reason": reason})
    return _with_revision(queries.record(conn, row, version), ctx)


# -- aliases ---------------------------------------------------------------------------------


def _check_expected(
    model: str, alias: str, expected: int | Unset | None, current: int | None
) -> None:
    if not isinstance(expected, Unset) and expected != current:
        shown = "unset" if current is None else f"version {current}"
        raise AliasConflict(
            f"alias {alias!r} of {model!r} points at {shown}, not "
            + ("unset" if expected is None else f"version {expected}"),
            model=model,
            alias=alias,
            expected=expected,
            actual=current,
        )


def _move(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: queries.ModelRow,
    alias: str,
    current: int | None,
    target: int | None,
    reason: str,
    action: str,
) -> dict[str, Any]:
    """Point ``alias`` at ``target`` (None: delete it), record the move and its event."""
    revision = ctx.revision
    if target is None:
        conn.execute("DELETE FROM aliases WHERE model_id = ? AND name = ?", (model["id"], alias))
    else:
        conn.execute(
            "INSERT INTO aliases (model_id, name, version, updated_by, updated_at, revision)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model_id, name) DO UPDATE SET"
            " version = excluded.version, updated_by = excluded.updated_by,"
            " updated_at = excluded.updated_at, revision = excluded.revision",
            (model["id"], alias, target, actor, ctx.at, revision),
        )
    conn.execute(
        "INSERT INTO alias_history (model_id, alias, from_version, to_version, actor, reason,"
        " at, revision, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (model["id"], alias, current, target, actor, reason, ctx.at, revision, action),
    )
    details = {"from_version": current, "to_version": target, "reason": reason}
    ctx.append_event(conn, actor, f"alias.{action}", f"{model['name']}@{alias}", details)
    assert ctx.event is not None
    return {
        "model": model["name"],
        "alias": alias,
        "from_version": current,
        "to_version": target,
        "actor": actor,
        "reason": reason,
        "at": ctx.at,
        "revision": revision,
        "revision_hash": ctx.event["hash"],
        "action": action,
    }


def set_alias(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    alias: str,
    version: int,
    expected: int | Unset | None,
    reason: str,
    protected: bool,
) -> dict[str, Any]:
    """Point ``alias`` at ``version``; the move record (with ``revision``).

    Raises :class:`ModelNotFound`, :class:`VersionNotFound`, :class:`AliasConflict` when
    ``expected`` is given and differs from the current target, :class:`InvalidTransition` for
    an archived version and :class:`NotApproved` for a protected alias and a version that is
    not approved.
    """
    row = queries.model_row(conn, model)
    target = queries.record(conn, row, version)
    current = queries.current_alias(conn, row, alias)
    _check_expected(model, alias, expected, current)
    if target["status"] == "archived":
        raise InvalidTransition(
            f"version {version} of {model!r} is archived; an alias cannot point at it",
            model=model,
            version=version,
            alias=alias,
            actual="archived",
        )
    if protected and target["status"] != "approved":
        raise NotApproved(
            f"alias {alias!r} is protected and version {version} of {model!r} is "
            f"{target['status']}, not approved",
            model=model,
            version=version,
            alias=alias,
            actual=target["status"],
        )
    return _move(conn, ctx, actor, row, alias, current, version, reason, "set")


def delete_alias(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    alias: str,
    expected: int | Unset | None,
    reason: str,
) -> dict[str, Any]:
    """Unset ``alias``; the move record. Raises :class:`AliasConflict` (``expected`` differs)
    or :class:`AliasNotFound` (the alias is unset)."""
    row = queries.model_row(conn, model)
    current = queries.current_alias(conn, row, alias)
    _check_expected(model, alias, expected, current)
    if current is None:
        raise AliasNotFound(f"model {model!r} has no alias {alias!r}", model=model, alias=alias)
    return _move(conn, ctx, actor, row, alias, current, None, reason, "delete")


def _target_stack(history: list[dict[str, Any]]) -> list[int | None]:
    """Replay an alias's moves (oldest first) into its stack of targets (module docstring)."""
    stack: list[int | None] = []
    for move in history:
        target = move["to_version"]
        if move["action"] == "rollback":
            while stack and stack[-1] != target:
                stack.pop()
            if not stack:
                stack.append(target)
        elif not stack or stack[-1] != target:
            stack.append(target)
    return stack


def rollback_target(
    history: list[dict[str, Any]], current: int | None, statuses: dict[int, str]
) -> int | None:
    """The version a rollback picks: the newest earlier target, other than ``current``, whose
    status is ``approved``; None when there is none."""
    stack = _target_stack(history)
    for candidate in reversed(stack[:-1]):
        if (
            candidate is not None
            and candidate != current
            and statuses.get(candidate) == ("approved")
        ):
            return candidate
    return None


def rollback_alias(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    model: str,
    alias: str,
    reason: str,
) -> dict[str, Any]:
    """Re-point ``alias`` to its previous target that is still approved; the move record.

    Raises :class:`AliasNotFound` for an alias that never existed and
    :class:`NothingToRollBack` when no earlier target is approved.
    """
    row = queries.model_row(conn, model)
    history = queries.history_rows(conn, row, alias)
    if not history:
        raise AliasNotFound(f"model {model!r} has no alias {alias!r}", model=model, alias=alias)
    current = queries.current_alias(conn, row, alias)
    statuses = dict(
        conn.execute("SELECT version, status FROM versions WHERE model_id = ?", (row["id"],))
    )
    target = rollback_target(history, current, statuses)
    if target is None:
        raise NothingToRollBack(
            f"alias {alias!r} of {model!r} has no earlier target that is still approved",
            model=model,
            alias=alias,
            actual=current,
        )
    return _move(conn, ctx, actor, row, alias, current, target, reason, "rollback")


# -- tokens ----------------------------------------------------------------------------------


def record_token(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    action: str,
    name: str,
    role: str,
    models: list[str],
) -> dict[str, Any]:
    """Append a ``token.create`` / ``token.revoke`` event; the event with its ``revision``.

    Tokens themselves live in ``secrets.db``: only who did what to which token, its role and
    scope reach this (replicated) database, never a secret or its hash.
    """
    return record_webhook(conn, ctx, actor, action, name, {"role": role, "models": models})


def record_webhook(
    conn: sqlite3.Connection,
    ctx: WriteContext,
    actor: str,
    action: str,
    webhook: str,
    details: dict[str, Any],
) -> dict[str, Any]:
    """Append a ``webhook.*`` event (or any event about something kept in ``secrets.db``,
    subject ``webhook``); the event with its ``revision``.

    Subscriptions live in ``secrets.db`` (``central/webhooks.py``): only their id, filters and
    the URL's origin reach this (replicated) database, never a secret or the URL's path.
    """
    ctx.append_event(conn, actor, action, webhook, details)
    assert ctx.event is not None
    return dict(ctx.event)


# -- heartbeat -------------------------------------------------------------------------------


def heartbeat(conn: sqlite3.Connection, ctx: WriteContext) -> None:
    """Rewrite the heartbeat row (time and current revision). Not an event."""
    conn.execute(
        "INSERT INTO heartbeat (id, at, revision) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE"
        " SET at = excluded.at, revision = excluded.revision",
        (ctx.at, ctx.last_revision),
    )
