"""Reads of ``registry.db``: records, lists with keyset pagination, search, point in time.

Plain functions of a ``sqlite3`` connection. They run on the store's read-only connections,
and :mod:`modelreg.central.policy` uses the lookup helpers inside write transactions too. Arguments
are already validated (:mod:`modelreg.central.validate`); these raise only the ``NotFound`` family
and :class:`InvalidField` for a bad page token.

Pages are ``{"items": [...], "next_page_token": str | None}``. A page token holds the list's
kind and the position of the last row, MAC'd by :class:`~modelreg.central.pagetoken.PageTokens`
(so only tokens central issued are read): rows are read strictly after that position in a fixed
order, so pages never skip or repeat rows when others are added.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from modelreg.central import audit
from modelreg.central.pagetoken import PageTokens
from modelreg.central.records import VERSION_SELECT, model_record, version_record
from modelreg.errors import AliasNotFound, InvalidField, ModelNotFound, VersionNotFound

__all__ = [
    "ModelRow",
    "alias_history",
    "counts",
    "current_alias",
    "events",
    "get_alias",
    "get_model",
    "get_version",
    "install_functions",
    "latest_version",
    "list_models",
    "list_versions",
    "model_row",
    "resolve",
    "search_versions",
    "version_row",
    "versions_by_key",
]

_FROM = " FROM versions v JOIN models m ON m.id = v.model_id"
_MODEL_COLUMNS = (
    "id",
    "name",
    "description",
    "owner",
    "tags",
    "created_by",
    "created_at",
    "updated_at",
    "last_version",
)

ModelRow = dict[str, Any]
Page = dict[str, Any]


# -- scopes ----------------------------------------------------------------------------------

#: The SQL function :func:`install_functions` adds: ``in_scope(model_name, globs_json)``.
_IN_SCOPE = "in_scope"


@functools.lru_cache(maxsize=256)
def _scope_regex(globs_json: str) -> re.Pattern[str]:
    globs = json.loads(globs_json)
    return re.compile("|".join(fnmatch.translate(g) for g in globs))


def _in_scope(name: Any, globs_json: Any) -> int:
    """``fnmatch.fnmatchcase`` of ``name`` against any of the JSON list of globs (1 or 0)."""
    if not isinstance(name, str) or not isinstance(globs_json, str):
        return 0
    return 1 if _scope_regex(globs_json).match(name) else 0


def install_functions(conn: sqlite3.Connection) -> None:
    """Add the SQL functions these queries use to ``conn`` (every read connection)."""
    conn.create_function(_IN_SCOPE, 2, _in_scope, deterministic=True)


def _scope_clause(column: str, scope: Sequence[str]) -> tuple[str, list[Any]]:
    """The ``AND`` clause keeping rows whose model ``column`` is inside ``scope`` (model-name
    globs; empty means every model). Filtering inside the query, before ``LIMIT``, is what keeps
    pages and page tokens from ever naming a model outside the scope."""
    if not scope:
        return "", []
    return f" AND {_IN_SCOPE}({column}, ?)", [json.dumps(sorted(scope))]


# -- page tokens -----------------------------------------------------------------------------


def _page(items: list[Any], limit: int, tokens: PageTokens, kind: str, position: Any) -> Page:
    """``items`` holds up to ``limit + 1`` rows; the extra row only says another page exists."""
    if len(items) > limit:
        del items[limit:]
        return {"items": items, "next_page_token": tokens.encode(kind, position(items[-1]))}
    return {"items": items, "next_page_token": None}


def _int_position(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise InvalidField("invalid page_token", field="page_token")
    return value


def _str_position(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidField("invalid page_token", field="page_token")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField("invalid page_token", field="page_token") from None
    return value


# -- lookups (also used inside write transactions) ------------------------------------------


def model_row(conn: sqlite3.Connection, name: str) -> ModelRow:
    """The ``models`` row of ``name`` as a dict; raises :class:`ModelNotFound`."""
    row = conn.execute(
        f"SELECT {', '.join(_MODEL_COLUMNS)} FROM models WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise ModelNotFound(f"model {name!r} does not exist", model=name)
    return dict(zip(_MODEL_COLUMNS, row, strict=True))


def version_row(conn: sqlite3.Connection, model: ModelRow, version: int) -> tuple[Any, ...]:
    """The :data:`VERSION_SELECT` row of one version; raises :class:`VersionNotFound`."""
    row = conn.execute(
        VERSION_SELECT + _FROM + " WHERE v.model_id = ? AND v.version = ?",
        (model["id"], version),
    ).fetchone()
    if row is None:
        raise VersionNotFound(
            f"model {model['name']!r} has no version {version}",
            model=model["name"],
            version=version,
        )
    return tuple(row)


def versions_by_key(
    conn: sqlite3.Connection,
    model_id: int,
    idempotency_key: str | None,
    run_id: str | None,
    sha256: str,
) -> list[tuple[Any, ...]]:
    """Rows (with ``v.idempotency_key`` appended) a registration could be a retry of: the
    one with ``idempotency_key``, else those with the same ``run_id`` and ``sha256``."""
    select = VERSION_SELECT + ", v.idempotency_key" + _FROM
    if idempotency_key is not None:
        row = conn.execute(
            select + " WHERE v.model_id = ? AND v.idempotency_key = ?",
            (model_id, idempotency_key),
        ).fetchone()
        if row is not None:
            return [tuple(row)]
    if run_id is None:
        return []
    rows = conn.execute(
        select + " WHERE v.run_id = ? AND v.sha256 = ? AND v.model_id = ? ORDER BY v.version",
        (run_id, sha256, model_id),
    ).fetchall()
    return [tuple(r) for r in rows]


def _aliases_of(
    conn: sqlite3.Connection, model_id: int, versions: Sequence[int]
) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if not versions:
        return out
    marks = ",".join("?" * len(versions))
    for name, version in conn.execute(
        f"SELECT name, version FROM aliases WHERE model_id = ? AND version IN ({marks})",
        (model_id, *versions),
    ):
        out.setdefault(version, []).append(name)
    return out


def _records(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Version records for rows of :data:`VERSION_SELECT` (with ``v.model_id`` appended)."""
    by_model: dict[int, list[int]] = {}
    for row in rows:
        by_model.setdefault(row[-1], []).append(row[1])
    aliases = {mid: _aliases_of(conn, mid, vs) for mid, vs in by_model.items()}
    return [version_record(row[:-1], aliases[row[-1]].get(row[1], ())) for row in rows]


def record(conn: sqlite3.Connection, model: ModelRow, version: int) -> dict[str, Any]:
    """The version record of one version (with its aliases); raises :class:`VersionNotFound`."""
    row = version_row(conn, model, version)
    names = _aliases_of(conn, model["id"], [version]).get(version, [])
    return version_record(row, names)


def latest_version(
    conn: sqlite3.Connection, model: ModelRow, at: str | None = None
) -> dict[str, Any] | None:
    """The highest non-archived version (as of ``at`` when given), or None."""
    if at is None:
        row = conn.execute(
            "SELECT version FROM versions WHERE model_id = ? AND status != 'archived'"
            " ORDER BY version DESC LIMIT 1",
            (model["id"],),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT version FROM versions WHERE model_id = ? AND created_at <= ?"
            " AND (archived_at IS NULL OR archived_at > ?) ORDER BY version DESC LIMIT 1",
            (model["id"], at, at),
        ).fetchone()
    return None if row is None else record(conn, model, int(row[0]))


def current_alias(conn: sqlite3.Connection, model: ModelRow, alias: str) -> int | None:
    """The version ``alias`` points at now, or None when it is unset."""
    row = conn.execute(
        "SELECT version FROM aliases WHERE model_id = ? AND name = ?", (model["id"], alias)
    ).fetchone()
    return None if row is None else int(row[0])


def _model_aliases(conn: sqlite3.Connection, model_id: int) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT name, version FROM aliases WHERE model_id = ? ORDER BY name", (model_id,)
        ).fetchall()
    )


def _model_record(conn: sqlite3.Connection, model: ModelRow) -> dict[str, Any]:
    return model_record(model, _model_aliases(conn, model["id"]), latest_version(conn, model))


# -- the read API ----------------------------------------------------------------------------


def get_model(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """The model record with its aliases and latest version; raises :class:`ModelNotFound`."""
    return _model_record(conn, model_row(conn, name))


def list_models(
    conn: sqlite3.Connection,
    prefix: str | None,
    limit: int,
    page_token: str | None,
    tokens: PageTokens,
    scope: Sequence[str] = (),
) -> Page:
    """Model records in name order, optionally only names starting with ``prefix``, only
    those inside ``scope`` (model-name globs; empty: every model)."""
    after = "" if page_token is None else _str_position(tokens.decode("models", page_token))
    clause, args = _scope_clause("name", scope)
    sql = f"SELECT {', '.join(_MODEL_COLUMNS)} FROM models WHERE name > ?" + clause
    args.insert(0, after)
    if prefix:
        sql += " AND name >= ? AND substr(name, 1, ?) = ?"
        args += [prefix, len(prefix), prefix]
    sql += " ORDER BY name LIMIT ?"
    args.append(limit + 1)
    rows = [dict(zip(_MODEL_COLUMNS, r, strict=True)) for r in conn.execute(sql, args)]
    page = _page(rows, limit, tokens, "models", lambda row: row["name"])
    page["items"] = [_model_record(conn, row) for row in page["items"]]
    return page


def get_version(conn: sqlite3.Connection, model: str, version: int) -> dict[str, Any]:
    """One version record; raises :class:`ModelNotFound` or :class:`VersionNotFound`."""
    return record(conn, model_row(conn, model), version)


def list_versions(
    conn: sqlite3.Connection,
    model: str,
    status: str | None,
    limit: int,
    page_token: str | None,
    tokens: PageTokens,
) -> Page:
    """A model's versions in version order, optionally of one status."""
    row = model_row(conn, model)
    after = 0 if page_token is None else _int_position(tokens.decode("versions", page_token))
    sql = VERSION_SELECT + ", v.model_id" + _FROM + " WHERE v.model_id = ? AND v.version > ?"
    args: list[Any] = [row["id"], after]
    if status is not None:
        sql += " AND v.status = ?"
        args.append(status)
    sql += " ORDER BY v.version LIMIT ?"
    args.append(limit + 1)
    rows = conn.execute(sql, args).fetchall()
    page = _page(rows, limit, tokens, "versions", lambda r: r[1])
    page["items"] = _records(conn, page["items"])
    return page


def search_versions(
    conn: sqlite3.Connection,
    *,
    model: str | None,
    status: str | None,
    tags: dict[str, str] | None,
    run_id: str | None,
    alias: str | None,
    created_after: str | None,
    created_before: str | None,
    limit: int,
    page_token: str | None,
    tokens: PageTokens,
    scope: Sequence[str] = (),
) -> Page:
    """Versions of every model matching all given filters, in (model name, version) order.

    ``created_after`` is inclusive, ``created_before`` exclusive. An unknown ``model`` gives
    an empty page, not an error: this is a search. Only models inside ``scope`` (model-name
    globs; empty: every model) are searched.
    """
    clause, args = _scope_clause("m.name", scope)
    sql = VERSION_SELECT + ", v.model_id" + _FROM + " WHERE 1" + clause
    if page_token is not None:
        position = tokens.decode("search", page_token)
        if not isinstance(position, list) or len(position) != 2:
            raise InvalidField("invalid page_token", field="page_token")
        sql += " AND (m.name, v.version) > (?, ?)"
        args += [_str_position(position[0]), _int_position(position[1])]
    if model is not None:
        sql += " AND m.name = ?"
        args.append(model)
    if status is not None:
        sql += " AND v.status = ?"
        args.append(status)
    if run_id is not None:
        sql += " AND v.run_id = ?"
        args.append(run_id)
    for key, value in (tags or {}).items():
        sql += " AND EXISTS (SELECT 1 FROM json_each(v.tags) t WHERE t.key = ? AND t.value = ?)"
        args += [key, value]
    if alias is not None:
        sql += (
            " AND EXISTS (SELECT 1 FROM aliases a WHERE a.model_id = v.model_id"
            " AND a.version = v.version AND a.name = ?)"
        )
        args.append(alias)
    if created_after is not None:
        sql += " AND v.created_at >= ?"
        args.append(created_after)
    if created_before is not None:
        sql += " AND v.created_at < ?"
        args.append(created_before)
    sql += " ORDER BY m.name, v.version LIMIT ?"
    args.append(limit + 1)
    rows = conn.execute(sql, args).fetchall()
    page = _page(rows, limit, tokens, "search", lambda r: [r[0], r[1]])
    page["items"] = _records(conn, page["items"])
    return page


def _move(row: Sequence[Any], model: str) -> dict[str, Any]:
    alias, from_version, to_version, actor, reason, at, revision, action, revision_hash = row
    return {
        "model": model,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "actor": actor,
        "reason": reason,
        "at": at,
        "revision": revision,
        "revision_hash": revision_hash,
        "action": action,
    }


#: The columns of :func:`_move`, from ``alias_history h`` joined with its event ``e``.
_MOVE_COLUMNS = (
    "h.alias, h.from_version, h.to_version, h.actor, h.reason, h.at, h.revision, h.action, e.hash"
)
_MOVES = " FROM alias_history h LEFT JOIN events e ON e.revision = h.revision"


def get_alias(
    conn: sqlite3.Connection, model: str, alias: str, at: str | None = None
) -> dict[str, Any]:
    """The alias now, or as it was at time ``at`` (answered from the alias history).

    Raises :class:`ModelNotFound`, or :class:`AliasNotFound` when the alias is (was) unset.
    """
    row = model_row(conn, model)
    if at is None:
        found = conn.execute(
            "SELECT version, updated_by, updated_at, revision FROM aliases"
            " WHERE model_id = ? AND name = ?",
            (row["id"], alias),
        ).fetchone()
    else:
        found = conn.execute(
            "SELECT to_version, actor, at, revision FROM alias_history"
            " WHERE model_id = ? AND alias = ? AND at <= ? ORDER BY id DESC LIMIT 1",
            (row["id"], alias, at),
        ).fetchone()
    if found is None or found[0] is None:
        when = "" if at is None else f" at {at}"
        raise AliasNotFound(
            f"model {model!r} has no alias {alias!r}{when}", model=model, alias=alias
        )
    version, updated_by, updated_at, revision = found
    event = conn.execute("SELECT hash FROM events WHERE revision = ?", (revision,)).fetchone()
    return {
        "model": model,
        "alias": alias,
        "version": version,
        "updated_by": updated_by,
        "updated_at": updated_at,
        "revision": revision,
        "revision_hash": None if event is None else event[0],
    }


def alias_history(
    conn: sqlite3.Connection,
    model: str,
    alias: str,
    limit: int,
    page_token: str | None,
    tokens: PageTokens,
) -> Page:
    """Every move of an alias, newest first. An alias that never existed has an empty
    history; raises :class:`ModelNotFound`."""
    row = model_row(conn, model)
    sql = f"SELECT h.id, {_MOVE_COLUMNS}{_MOVES} WHERE h.model_id = ? AND h.alias = ?"
    args: list[Any] = [row["id"], alias]
    if page_token is not None:
        sql += " AND h.id < ?"
        args.append(_int_position(tokens.decode("history", page_token)))
    sql += " ORDER BY h.id DESC LIMIT ?"
    args.append(limit + 1)
    rows = conn.execute(sql, args).fetchall()
    page = _page(rows, limit, tokens, "history", lambda r: r[0])
    page["items"] = [_move(r[1:], model) for r in page["items"]]
    return page


def history_rows(conn: sqlite3.Connection, model: ModelRow, alias: str) -> list[dict[str, Any]]:
    """Every move of an alias, oldest first (for rollback)."""
    rows = conn.execute(
        f"SELECT {_MOVE_COLUMNS}{_MOVES} WHERE h.model_id = ? AND h.alias = ? ORDER BY h.id",
        (model["id"], alias),
    ).fetchall()
    return [_move(r, model["name"]) for r in rows]


def resolve(
    conn: sqlite3.Connection, model: str, ref: str, at: str | None = None
) -> dict[str, Any]:
    """``{"model", "ref", "version": record}`` for an alias, a version number or ``latest``.

    With ``at``: what the ref named at that time (a version created later is not found).
    The record itself is the version as it is now. Raises the ``NotFound`` family.
    """
    row = model_row(conn, model)
    if ref == "latest":
        found = latest_version(conn, row, at)
        if found is None:
            raise VersionNotFound(
                f"model {model!r} has no version that is not archived", model=model, ref=ref
            )
        return {"model": model, "ref": ref, "version": found}
    if ref.isascii() and ref.isdigit():
        version = int(ref)
        found = record(conn, row, version)
        if at is not None and found["created_at"] > at:
            raise VersionNotFound(
                f"model {model!r} had no version {version} at {at}", model=model, version=version
            )
        return {"model": model, "ref": ref, "version": found}
    target = get_alias(conn, model, ref, at)
    return {"model": model, "ref": ref, "version": record(conn, row, target["version"])}


def events(conn: sqlite3.Connection, after: int, limit: int, tokens: PageTokens) -> Page:
    """Events with a revision above ``after``, in revision order."""
    rows = conn.execute(
        "SELECT revision, at, actor, action, subject, details, prev_hash, hash FROM events"
        " WHERE revision > ? ORDER BY revision LIMIT ?",
        (after, limit + 1),
    ).fetchall()
    page = _page(rows, limit, tokens, "events", lambda r: r[0])
    page["items"] = [audit.event_record(r) for r in page["items"]]
    return page


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts: models, versions, aliases, events."""
    return {
        table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        for table in ("models", "versions", "aliases", "events")
    }


def revision(conn: sqlite3.Connection) -> int:
    """The registry revision recorded in the database (0 when empty)."""
    return int(conn.execute("SELECT coalesce(max(revision), 0) FROM events").fetchone()[0])
