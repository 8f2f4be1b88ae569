"""``reg models create|list|show``: the models of the registry."""

from __future__ import annotations

from typing import Any

import click

from modelreg.cli.context import (
    KEY_VALUE,
    Context,
    RegGroup,
    json_option,
    next_page_hint,
    page_options,
    pairs_dict,
    pass_context,
)
from modelreg.cli.output import emit, model_text, models_table

__all__ = ["models", "register"]


@click.group("models", cls=RegGroup)
def models() -> None:
    """Create, list and show models.

    \b
    Example:
        reg models create fraud --description "card fraud scorer" --owner risk
        reg models list --prefix fraud
        reg models show fraud
    """


@models.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the model does.")
@click.option("--owner", default="", help="Team or person who owns it.")
@click.option("--tag", "tags", multiple=True, type=KEY_VALUE, help="A tag KEY=VALUE (repeatable).")
@json_option
@pass_context
def create(
    ctx: Context, name: str, description: str, owner: str, tags: tuple[tuple[str, str], ...]
) -> None:
    """Create the model NAME ([a-z0-9][a-z0-9._-]*, at most 128 characters).

    \b
    Example:
        reg models create fraud --description "card fraud scorer" --owner risk --tag team=risk
    """
    record = ctx.client().create_model(name, description, owner, pairs_dict(tags))
    emit(ctx, record, lambda r: f"created model {r['name']} (revision {r.get('revision')})")


@models.command("list")
@click.option("--prefix", default=None, help="Only models whose name starts with this.")
@page_options
@json_option
@pass_context
def list_(ctx: Context, prefix: str | None, limit: int, page_token: str | None) -> None:
    """List models, by name; prints one page (see --limit and --page-token).

    \b
    Example:
        reg models list
        reg models list --prefix fraud --limit 10 --json
    """
    page = ctx.client().list_models(prefix, limit, page_token)
    emit(ctx, page, lambda p: models_table(p.get("items", [])) if p.get("items") else "no models")
    next_page_hint(ctx, page)


@models.command("show")
@click.argument("name")
@json_option
@pass_context
def show(ctx: Context, name: str) -> None:
    """Show the model NAME with its aliases and latest version.

    \b
    Example:
        reg models show fraud
        reg models show fraud --json
    """
    record: dict[str, Any] = ctx.client().get_model(name)
    emit(ctx, record, model_text)


def register(root: click.Group) -> None:
    """Add ``reg models`` to ``root``."""
    root.add_command(models)
