"""``reg promote|rollback|history``: move aliases (production, staging…) and read their past."""

from __future__ import annotations

from typing import Any

import click

from modelreg.central.client import UNSET
from modelreg.cli.context import Context, ParamType, json_option, pass_context
from modelreg.cli.output import alias_move_text, emit, moves_table

__all__ = ["ExpectedVersion", "register"]


class ExpectedVersion(ParamType[Any]):
    """``--expected``: a version number, ``none`` for "the alias is unset now", or ``any``
    (the default: no compare-and-set, :data:`modelreg.central.client.UNSET`)."""

    name = "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or value is UNSET or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "any":
            return UNSET
        if text in ("none", "null", "unset"):
            return None
        try:
            number = int(text)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"expected a version number or 'none', got {value!r}", param, ctx)
        return number


@click.command("promote")
@click.argument("model")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--to", "alias", required=True, help="The alias to point at VERSION.")
@click.option(
    "--expected",
    type=ExpectedVersion(),
    default="any",
    show_default=True,
    help="Only move if the alias points at N now ('none': if it is unset); else exit 4.",
)
@click.option("--reason", default="", help="Why; recorded in the alias history.")
@json_option
@pass_context
def promote(ctx: Context, model: str, version: int, alias: str, expected: Any, reason: str) -> None:
    """Point ALIAS of MODEL at VERSION. Protected aliases (production) take only approved
    versions, moved by a deployer.

    \b
    Example:
        reg promote fraud 3 --to staging
        reg promote fraud 3 --to production --expected 2 --reason "v3 wins the A/B test"
    """
    move = ctx.client().set_alias(model, alias, version, expected, reason)
    emit(ctx, move, alias_move_text)


@click.command("rollback")
@click.argument("model")
@click.argument("alias")
@click.option("--reason", default="", help="Why; recorded in the alias history.")
@json_option
@pass_context
def rollback(ctx: Context, model: str, alias: str, reason: str) -> None:
    """Point ALIAS of MODEL back at its previous target that is still approved.

    \b
    Example:
        reg rollback fraud production --reason "v3 raises false positives"
    """
    move = ctx.client().rollback(model, alias, reason)
    emit(ctx, move, alias_move_text)


@click.command("history")
@click.argument("model")
@click.argument("alias", required=False)
@click.option("--at", default=None, help="With ALIAS: what it pointed at at this RFC 3339 time.")
@json_option
@pass_context
def history(ctx: Context, model: str, alias: str | None, at: str | None) -> None:
    """Every move of ALIAS of MODEL, newest first: from, to, who, why, when, revision.

    Without ALIAS, the moves of every alias the model has now. With --at, only the version
    ALIAS pointed at at that time.

    \b
    Example:
        reg history fraud production
        reg history fraud
        reg history fraud production --at 2026-11-27T09:00:00Z
    """
    client = ctx.client()
    if at is not None:
        if alias is None:
            raise click.UsageError("--at needs an ALIAS")
        state = client.get_alias(model, alias, at)
        emit(ctx, state, lambda a: f"{a['model']}@{a['alias']} at {at}: v{a['version']}")
        return
    if alias is not None:
        moves = list(client.iter_alias_history(model, alias))
    else:
        names = sorted(client.get_model(model).get("aliases", {}))
        moves = [move for name in names for move in client.iter_alias_history(model, name)]
    moves.sort(key=lambda m: m.get("revision") or 0, reverse=True)
    emit(ctx, {"items": moves}, lambda d: moves_table(d["items"]) if d["items"] else "no moves")


def register(root: click.Group) -> None:
    """Add ``reg promote|rollback|history`` to ``root``."""
    for command in (promote, rollback, history):
        root.add_command(command)
