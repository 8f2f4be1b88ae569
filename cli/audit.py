"""``reg events`` and ``reg audit verify``: the append-only, hash-chained event log."""

from __future__ import annotations

from typing import Any

import click

from modelreg.cli.context import Context, RegGroup, command_error, json_option, pass_context
from modelreg.cli.output import emit, event_rows, fields_text

__all__ = ["audit", "register"]


@click.command("events")
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Revision to start after.",
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Events to show."
)
@json_option
@pass_context
def events(ctx: Context, after: int, limit: int) -> None:
    """Events with a revision above --after, oldest first: who did what, when, and its hash.

    \b
    Example:
        reg events
        reg events --after 120 --limit 20 --json
    """
    page = ctx.client().events(after, limit)
    emit(ctx, page, lambda p: event_rows(p["items"]) if p.get("items") else "no events")
    items = page.get("items") or []
    if page.get("next_page_token") and items and not ctx.json:
        click.echo(f"more: add --after {items[-1].get('revision')}", err=True)


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
