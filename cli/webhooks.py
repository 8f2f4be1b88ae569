"""``reg webhook create|list|show|update|delete|test|deliveries|redeliver`` (admin).

A webhook sends every matching event to a URL as a signed POST (Standard Webhooks), in order,
retrying failures for up to a day (docs/API.md, "Webhooks").
"""

from __future__ import annotations

from typing import Any

import click

from modelreg.cli.context import (
    Context,
    RegGroup,
    command_error,
    json_option,
    next_page_hint,
    page_options,
    pass_context,
)
from modelreg.cli.output import emit, fields_text, table

__all__ = ["register", "webhook"]

_EVENT = click.option(
    "--event",
    "events",
    multiple=True,
    metavar="GLOB",
    help="Send events whose action matches GLOB, e.g. version.* (repeatable; default: all).",
)
_MODEL = click.option(
    "--model",
    "models",
    multiple=True,
    metavar="GLOB",
    help="Send only events of models matching GLOB (repeatable; default: every event).",
)


@click.group("webhook", cls=RegGroup)
def webhook() -> None:
    """Send events to URLs as they happen: signed, in order, retried (admin).

    \b
    Example:
        reg webhook create https://ci.example.com/hooks/registry --event 'version.*'
        reg webhook list
        reg webhook deliveries wh_0123456789abcdef
    """


def _webhook_text(w: dict[str, Any]) -> str:
    delivery = w.get("delivery") or {}
    retrying = delivery.get("retrying") or {}
    last = retrying.get("last_attempt") or {}
    pairs: list[tuple[str, Any]] = [
        ("id", w.get("id")),
        ("url", w.get("url")),
        ("events", w.get("events")),
        ("models", w.get("models") or "*"),
        ("description", w.get("description")),
        ("enabled", w.get("enabled")),
        ("state", delivery.get("state")),
        ("position", delivery.get("cursor")),
        ("backlog", delivery.get("backlog")),
    ]
    if w.get("disabled_reason"):
        pairs.append(("disabled", w.get("disabled_reason")))
    if retrying:
        pairs += [
            ("retrying", f"revision {retrying.get('revision')}"),
            ("attempts", retrying.get("attempts")),
            ("last error", last.get("error")),
            ("next attempt", retrying.get("next_attempt_at")),
        ]
    return fields_text(pairs)


def _with_secret(w: dict[str, Any]) -> str:
    text = _webhook_text(w)
    if w.get("secret"):
        text += (
            "\nits signing secret, shown only once (receivers verify webhook-signature with it):"
            f"\n{w['secret']}"
        )
    return text


@webhook.command("create")
@click.argument("url")
@_EVENT
@_MODEL
@click.option("--description", default="", help="What the receiver does with the events.")
@json_option
@pass_context
def create(
    ctx: Context, url: str, events: tuple[str, ...], models: tuple[str, ...], description: str
) -> None:
    """Subscribe URL to events; its signing secret is printed once and never again.

    \b
    Example:
        reg webhook create https://ci.example.com/hooks/registry --event 'version.register'
        reg webhook create https://chat.example.com/T0/B1 --model 'fraud-*' --event 'alias.*'
    """
    created = ctx.client().create_webhook(url, list(events), list(models), description)
    emit(ctx, created, _with_secret)


@webhook.command("list")
@json_option
@pass_context
def list_(ctx: Context) -> None:
    """List webhooks: id, URL, filters, whether enabled and how far delivery got.

    \b
    Example:
        reg webhook list
    """
    page = ctx.client().list_webhooks()
    columns = [
        ("id", lambda w: w.get("id")),
        ("url", lambda w: w.get("url")),
        ("events", lambda w: w.get("events")),
        ("models", lambda w: w.get("models") or "*"),
        ("enabled", lambda w: w.get("enabled")),
        ("state", lambda w: (w.get("delivery") or {}).get("state")),
        ("backlog", lambda w: (w.get("delivery") or {}).get("backlog")),
    ]
    emit(ctx, page, lambda p: table(p["items"], columns) if p.get("items") else "no webhooks")


@webhook.command("show")
@click.argument("webhook_id", metavar="ID")
@json_option
@pass_context
def show(ctx: Context, webhook_id: str) -> None:
    """Show one webhook and where its deliveries stand (a failing one: its last error).

    \b
    Example:
        reg webhook show wh_0123456789abcdef
    """
    emit(ctx, ctx.client().get_webhook(webhook_id), _webhook_text)


@webhook.command("update")
@click.argument("webhook_id", metavar="ID")
@click.option("--url", default=None, help="Send to this URL from now on.")
@_EVENT
@_MODEL
@click.option("--all-models", is_flag=True, help="Drop the --model filter: every event.")
@click.option("--description", default=None, help="New description.")
@click.option(
    "--enable/--disable",
    "enabled",
    default=None,
    help="Resume delivery (from the first event not delivered) or pause it.",
)
@click.option(
    "--rotate-secret",
    is_flag=True,
    help="New signing secret (printed once); the old one also signs for 24 h.",
)
@json_option
@pass_context
def update(
    ctx: Context,
    webhook_id: str,
    url: str | None,
    events: tuple[str, ...],
    models: tuple[str, ...],
    all_models: bool,
    description: str | None,
    enabled: bool | None,
    rotate_secret: bool,
) -> None:
    """Change a webhook; --event and --model replace its filters when given.

    \b
    Example:
        reg webhook update wh_0123456789abcdef --enable
        reg webhook update wh_0123456789abcdef --event 'alias.*' --rotate-secret
    """
    if all_models and models:
        raise command_error("give --model or --all-models, not both", 2)
    changes: dict[str, Any] = {
        "url": url,
        "events": list(events) or None,
        "models": [] if all_models else (list(models) or None),
        "description": description,
        "enabled": enabled,
        "rotate_secret": True if rotate_secret else None,
    }
    updated = ctx.client().update_webhook(webhook_id, **changes)
    emit(ctx, updated, _with_secret)


@webhook.command("delete")
@click.argument("webhook_id", metavar="ID")
@json_option
@pass_context
def delete(ctx: Context, webhook_id: str) -> None:
    """Delete a webhook: nothing more is sent to it, and its delivery history goes.

    \b
    Example:
        reg webhook delete wh_0123456789abcdef
    """
    answer = ctx.client().delete_webhook(webhook_id)
    emit(ctx, answer, lambda a: f"deleted webhook {webhook_id} (revision {a.get('revision')})")


def _delivery_text(d: dict[str, Any]) -> str:
    last = d.get("last_attempt") or {}
    pairs: list[tuple[str, Any]] = [
        ("delivery", d.get("id")),
        ("message", d.get("message_id")),
        ("revision", d.get("revision")),
        ("action", d.get("action")),
        ("kind", d.get("kind")),
        ("state", d.get("state")),
        ("attempts", d.get("attempts")),
        ("status", last.get("status")),
        ("latency ms", last.get("latency_ms")),
        ("error", last.get("error")),
        ("response", last.get("response")),
    ]
    text = fields_text(pairs)
    log = d.get("attempt_log")
    if log:
        columns = [
            ("n", lambda a: a.get("n")),
            ("at", lambda a: a.get("at")),
            ("status", lambda a: a.get("status")),
            ("ms", lambda a: a.get("latency_ms")),
            ("error", lambda a: a.get("error")),
        ]
        text += "\n\n" + table(log, columns)
    return text


def _one_attempt(ctx: Context, delivery: dict[str, Any]) -> None:
    emit(ctx, delivery, _delivery_text)
    if delivery.get("state") != "delivered":
        error = (delivery.get("last_attempt") or {}).get("error") or "not delivered"
        raise command_error(f"delivery failed: {error}")


@webhook.command("test")
@click.argument("webhook_id", metavar="ID")
@json_option
@pass_context
def test(ctx: Context, webhook_id: str) -> None:
    """Send a signed webhook.test ping now and show the receiver's answer (exit 1 unless 2xx).

    \b
    Example:
        reg webhook test wh_0123456789abcdef
    """
    _one_attempt(ctx, ctx.client().test_webhook(webhook_id))


@webhook.command("deliveries")
@click.argument("webhook_id", metavar="ID")
@click.argument("delivery", type=click.IntRange(min=1), required=False)
@click.option(
    "--state",
    type=click.Choice(["pending", "delivered", "failed"]),
    default=None,
    help="Only deliveries in this state (pending: being retried).",
)
@page_options
@json_option
@pass_context
def deliveries(
    ctx: Context,
    webhook_id: str,
    delivery: int | None,
    state: str | None,
    limit: int,
    page_token: str | None,
) -> None:
    """A webhook's deliveries, newest first, with each one's last attempt; with DELIVERY,
    that delivery and every attempt (status, latency, error, the answer's first KiB).

    \b
    Example:
        reg webhook deliveries wh_0123456789abcdef --state pending
        reg webhook deliveries wh_0123456789abcdef 42
    """
    client = ctx.client()
    if delivery is not None:
        emit(ctx, client.get_delivery(webhook_id, delivery), _delivery_text)
        return
    page = client.deliveries(webhook_id, state, limit, page_token)
    columns = [
        ("id", lambda d: d.get("id")),
        ("revision", lambda d: d.get("revision")),
        ("action", lambda d: d.get("action")),
        ("kind", lambda d: d.get("kind")),
        ("state", lambda d: d.get("state")),
        ("attempts", lambda d: d.get("attempts")),
        ("status", lambda d: (d.get("last_attempt") or {}).get("status")),
        ("ms", lambda d: (d.get("last_attempt") or {}).get("latency_ms")),
        ("error", lambda d: (d.get("last_attempt") or {}).get("error")),
    ]
    emit(ctx, page, lambda p: table(p["items"], columns) if p.get("items") else "no deliveries")
    next_page_hint(ctx, page)


@webhook.command("redeliver")
@click.argument("webhook_id", metavar="ID")
@click.argument("delivery", type=click.IntRange(min=1))
@json_option
@pass_context
def redeliver(ctx: Context, webhook_id: str, delivery: int) -> None:
    """Send a delivery's message again now (same webhook-id, so receivers can tell), and show
    the answer (exit 1 unless 2xx). One being retried is also retried at once.

    \b
    Example:
        reg webhook redeliver wh_0123456789abcdef 42
    """
    _one_attempt(ctx, ctx.client().redeliver(webhook_id, delivery))


def register(root: click.Group) -> None:
    """Add ``reg webhook`` to ``root``."""
    root.add_command(webhook)
