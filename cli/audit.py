"""``reg events`` and ``reg audit verify``: the append-only, hash-chained event log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click

from modelreg.cli.context import Context, RegGroup, command_error, json_option, pass_context
from modelreg.cli.output import emit, event_rows, fields_text, value_text

__all__ = ["audit", "register"]


@click.command("events")
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=None,
    help="Revision to start after  [default: 0; with --follow: now]",
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Events to show."
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="GLOB",
    help="Only events of models matching GLOB (repeatable).",
)
@click.option(
    "--action",
    "actions",
    multiple=True,
    metavar="GLOB",
    help="Only these actions, e.g. version.* or alias.set (repeatable).",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing events as they are committed (Ctrl-C stops); with --json, one JSON "
    "object a line.",
)
@json_option
@pass_context
def events(
    ctx: Context,
    after: int | None,
    limit: int,
    models: tuple[str, ...],
    actions: tuple[str, ...],
    follow: bool,
) -> None:
    """Events with a revision above --after, oldest first: who did what, when, and its hash.

    A token scoped to some models sees only their events. --follow streams new events as
    they happen (server-sent events), resuming where it stopped if central restarts.

    \b
    Example:
        reg events
        reg events --after 120 --limit 20 --json
        reg events --follow --model 'fraud-*' --action 'alias.*'
    """
    client = ctx.client()
    if follow:
        _follow(ctx, client.follow_events(after, list(models), list(actions)))
        return
    page = client.events(after or 0, limit, models=list(models), actions=list(actions))
    emit(ctx, page, lambda p: event_rows(p["items"]) if p.get("items") else "no events")
    if page.get("next_page_token") and not ctx.json:
        click.echo(f"more: add --after {page.get('last_revision')}", err=True)


def _follow(ctx: Context, stream: Iterator[dict[str, Any]]) -> None:
    """One line per event as it arrives (a table cannot be aligned before it ends)."""
    keys = ("revision", "at", "actor", "action", "subject", "details")
    try:
        for event in stream:
            if ctx.json:
                click.echo(json.dumps(event, ensure_ascii=False))
            else:
                click.echo("  ".join(value_text(event.get(key)) for key in keys))
    except KeyboardInterrupt:
        pass


@click.group("audit", cls=RegGroup)
def audit() -> None:
    """Check the event log.

    \b
    Example:
        reg audit verify
    """


@audit.command("verify")
@json_option
@pass_context
def verify(ctx: Context) -> None:
    """Recompute the event log's hash chain at central (admin); exit 1 naming the first bad
    revision if any event was altered.

    \b
    Example:
        reg audit verify
    """
    report: dict[str, Any] = ctx.client().verify_audit()

    def text(r: dict[str, Any]) -> str:
        return fields_text(
            [
                ("audit", "ok" if r.get("ok") else "FAILED"),
                ("checked", r.get("checked")),
                ("revision", r.get("revision")),
            ]
        )

    emit(ctx, report, text)
    if not report.get("ok"):
        bad = report.get("first_bad_revision")
        raise command_error(
            f"audit chain broken at revision {bad}: {report.get('message') or 'hash mismatch'}"
        )


def register(root: click.Group) -> None:
    """Add ``reg events`` and ``reg audit verify`` to ``root``."""
    root.add_command(events)
    root.add_command(audit)
