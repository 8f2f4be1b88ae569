"""``reg token create|list|revoke``: bearer tokens for central (admin)."""

from __future__ import annotations

from typing import Any

import click

from modelreg.cli.context import Context, RegGroup, json_option, pass_context
from modelreg.cli.output import emit, table

__all__ = ["ROLES", "register", "token"]

#: Roles, weakest first: approver and deployer each include publisher; admin includes all.
ROLES = ("reader", "publisher", "approver", "deployer", "admin")


@click.group("token", cls=RegGroup)
def token() -> None:
    """Create, list and revoke bearer tokens (admin).

    \b
    Example:
        reg token create ci --role publisher --models 'fraud-*'
        reg token list
        reg token revoke ci
    """


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option(
    "--models",
    "models",
    multiple=True,
    metavar="GLOB",
    help="Limit the token to models matching GLOB (repeatable; default: all).",
)
@json_option
@pass_context
def create(ctx: Context, name: str, role: str, models: tuple[str, ...]) -> None:
    """Create the token NAME; its secret is printed once and never again.

    \b
    Example:
        reg token create ci --role publisher --models 'fraud-*'
        reg token create release --role deployer --json
    """
    created = ctx.client().create_token(name, role, list(models) or None)

    def text(t: dict[str, Any]) -> str:
        return (
            f"created token {t.get('name')} (role {t.get('role')}, revision {t.get('revision')});"
            f" its secret, shown only once:\n{t.get('secret')}"
        )

    emit(ctx, created, text)


@token.command("list")
@json_option
@pass_context
def list_(ctx: Context) -> None:
    """List tokens: name, role, model scopes, creation, last use (never secrets).

    \b
    Example:
        reg token list
    """
    page = ctx.client().list_tokens()
    columns = [
        ("name", lambda t: t.get("name")),
        ("role", lambda t: t.get("role")),
        ("models", lambda t: t.get("models") or "*"),
        ("created", lambda t: t.get("created_at")),
        ("created by", lambda t: t.get("created_by")),
        ("last used", lambda t: t.get("last_used_at")),
    ]
    emit(ctx, page, lambda p: table(p["items"], columns) if p.get("items") else "no tokens")


@token.command("revoke")
@click.argument("name")
@json_option
@pass_context
def revoke(ctx: Context, name: str) -> None:
    """Revoke the token NAME: it stops working at once.

    \b
    Example:
        reg token revoke ci
    """
    answer = ctx.client().revoke_token(name)
    emit(ctx, answer, lambda a: f"revoked token {name} (revision {a.get('revision')})")


def register(root: click.Group) -> None:
    """Add ``reg token`` to ``root``."""
    root.add_command(token)
