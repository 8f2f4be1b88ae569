"""How ``reg`` prints: JSON for scripts (``--json``), aligned text for people.

Commands hand :func:`emit` the decoded answer and a function that renders it as text; nothing
else in ``cli/`` formats output. Pure functions apart from :func:`emit`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click

from modelreg.cli.context import Context

__all__ = [
    "alias_move_text",
    "emit",
    "event_rows",
    "fields_text",
    "model_text",
    "models_table",
    "moves_table",
    "table",
    "value_text",
    "version_text",
    "versions_table",
]

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def emit(ctx: Context, data: Any, text: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else ``text(data)``."""
    if ctx.json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        rendered = text(data)
        if rendered:
            click.echo(rendered)


def value_text(value: Any) -> str:
    """One value on one line: ``-`` for nothing, ``k=v, …`` for a mapping."""
    if value is None or value == "" or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={value_text(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value)
    return " ".join(str(value).split())


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows under a header, each column as wide as its widest cell."""
    cells = [[header.upper() for header, _ in columns]]
    cells += [[value_text(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def fields_text(pairs: Sequence[tuple[str, Any]]) -> str:
    """``label: value`` lines with the values aligned."""
    width = max((len(label) for label, _ in pairs), default=0) + 1
    return "\n".join(f"{label + ':':<{width}} {value_text(value)}" for label, value in pairs)


def _version_label(record: Mapping[str, Any]) -> str:
    return f"{record.get('model')} v{record.get('version')}"


def version_text(record: Mapping[str, Any]) -> str:
    """A version record, one field a line."""
    artifact = record.get("artifact") or {}
    lineage = record.get("lineage") or {}
    decision = record.get("decision")
    archived = record.get("archived")
    pairs: list[tuple[str, Any]] = [
        ("version", _version_label(record)),
        ("status", record.get("status")),
        ("aliases", record.get("aliases")),
        ("artifact", artifact.get("uri")),
        ("sha256", artifact.get("sha256")),
        ("size", artifact.get("size")),
        ("format", artifact.get("format")),
        ("run id", lineage.get("run_id")),
        ("commit", lineage.get("commit")),
        ("dataset", lineage.get("dataset_uri")),
        ("dataset digest", lineage.get("dataset_digest")),
        ("parent", lineage.get("parent_version")),
        ("params", record.get("params")),
        ("metrics", record.get("metrics")),
        ("tags", record.get("tags")),
        ("description", record.get("description")),
        ("created", f"{record.get('created_at')} by {record.get('created_by')}"),
    ]
    if decision:
        pairs.append(
            (
                str(decision.get("status")),
                f"{decision.get('at')} by {decision.get('by')}"
                + (f": {decision['comment']}" if decision.get("comment") else ""),
            )
        )
    if archived:
        pairs.append(
            (
                "archived",
                f"{archived.get('at')} by {archived.get('by')}"
                + (f": {archived['reason']}" if archived.get("reason") else ""),
            )
        )
    if "revision" in record:
        pairs.append(("revision", record["revision"]))
    return fields_text(pairs)


def model_text(record: Mapping[str, Any]) -> str:
    """A model record with its aliases and latest version."""
    latest = record.get("latest")
    pairs: list[tuple[str, Any]] = [
        ("model", record.get("name")),
        ("description", record.get("description")),
        ("owner", record.get("owner")),
        ("tags", record.get("tags")),
        ("aliases", record.get("aliases")),
        ("latest", _version_label(latest) + f" ({latest.get('status')})" if latest else None),
        ("created", f"{record.get('created_at')} by {record.get('created_by')}"),
        ("updated", record.get("updated_at")),
    ]
    if "revision" in record:
        pairs.append(("revision", record["revision"]))
    return fields_text(pairs)


def models_table(items: Iterable[Mapping[str, Any]]) -> str:
    """Models, one a row."""
    return table(
        items,
        [
            ("name", lambda m: m.get("name")),
            ("latest", lambda m: (m.get("latest") or {}).get("version")),
            ("aliases", lambda m: m.get("aliases")),
            ("owner", lambda m: m.get("owner")),
            ("description", lambda m: m.get("description")),
        ],
    )


def versions_table(items: Iterable[Mapping[str, Any]]) -> str:
    """Versions, one a row."""
    return table(
        items,
        [
            ("model", lambda v: v.get("model")),
            ("version", lambda v: v.get("version")),
            ("status", lambda v: v.get("status")),
            ("aliases", lambda v: v.get("aliases")),
            ("artifact", lambda v: (v.get("artifact") or {}).get("uri")),
            ("run id", lambda v: (v.get("lineage") or {}).get("run_id")),
            ("created", lambda v: v.get("created_at")),
        ],
    )


def _target(version: Any) -> str:
    return "(unset)" if version is None else f"v{version}"


def alias_move_text(move: Mapping[str, Any]) -> str:
    """One alias move as a sentence: ``fraud@production: v2 -> v3 (revision 17)``."""
    text = (
        f"{move.get('model')}@{move.get('alias')}: "
        f"{_target(move.get('from_version'))} -> {_target(move.get('to_version'))}"
    )
    if move.get("revision") is not None:
        text += f" (revision {move['revision']})"
    return text


def moves_table(items: Iterable[Mapping[str, Any]]) -> str:
    """Alias moves, one a row."""
    return table(
        items,
        [
            ("at", lambda m: m.get("at")),
            ("alias", lambda m: m.get("alias")),
            ("action", lambda m: m.get("action")),
            ("from", lambda m: _target(m.get("from_version"))),
            ("to", lambda m: _target(m.get("to_version"))),
            ("actor", lambda m: m.get("actor")),
            ("revision", lambda m: m.get("revision")),
            ("reason", lambda m: m.get("reason")),
        ],
    )


def event_rows(items: Iterable[Mapping[str, Any]]) -> str:
    """Events, one a row."""
    return table(
        items,
        [
            ("revision", lambda e: e.get("revision")),
            ("at", lambda e: e.get("at")),
            ("actor", lambda e: e.get("actor")),
            ("action", lambda e: e.get("action")),
            ("subject", lambda e: e.get("subject")),
            ("details", lambda e: e.get("details")),
        ],
    )
