"""``reg push|approve|reject|archive|search``: versions of a model and their status."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click

from modelreg.central.records import parse_time
from modelreg.cli.context import (
    KEY_NUMBER,
    KEY_VALUE,
    Context,
    command_error,
    json_option,
    next_page_hint,
    page_options,
    pairs_dict,
    pass_context,
)
from modelreg.cli.output import emit, versions_table

__all__ = ["file_digest", "register"]

#: Bytes read at a time while hashing a local artifact.
HASH_CHUNK_BYTES = 1 << 20

VERSION = click.IntRange(min=1)
STATUSES = click.Choice(["registered", "approved", "rejected", "archived"])


def file_digest(path: Path) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _artifact(value: str, sha256: str | None, size: int | None) -> tuple[str, str, int | None]:
    """``(uri, sha256, size)`` for ``--artifact``: a URI as given, or a local file hashed."""
    if "://" in value:
        if not sha256:
            raise click.UsageError(
                f"--sha256 is required with an artifact URI ({value}); "
                "give a local file path to have it hashed"
            )
        return value, sha256, size
    path = Path(value)
    if not path.exists():
        raise click.BadParameter(
            f"no such file: {value} (give a local file, or a URI with --sha256)",
            param_hint="--artifact",
        )
    if not path.is_file():
        raise click.BadParameter(
            f"{value} is not a file (give a local file, or a URI with --sha256)",
            param_hint="--artifact",
        )
    try:
        digest, file_size = file_digest(path)
    except OSError as exc:
        raise command_error(f"cannot read {value}: {exc.strerror}") from None
    if sha256 and sha256.lower() != digest:
        raise command_error(f"--sha256 {sha256} does not match {value} (sha256 {digest})")
    return path.resolve().as_uri(), digest, file_size


@click.command("push")
@click.argument("model")
@click.option(
    "--artifact", required=True, metavar="URI|PATH", help="Artifact URI, or a local file to hash."
)
@click.option("--sha256", default=None, help="Artifact digest (64 hex); computed for a local file.")
@click.option("--size", type=click.IntRange(min=0), default=None, help="Artifact size in bytes.")
@click.option("--format", "fmt", default=None, help="Artifact format (onnx, pickle, …).")
@click.option("--run-id", default=None, help="Training run that produced it.")
@click.option("--commit", default=None, help="Code commit it was trained from.")
@click.option("--dataset", "dataset_uri", default=None, help="Training dataset URI.")
@click.option("--dataset-digest", default=None, help="Training dataset digest.")
@click.option("--parent", "parent_version", type=VERSION, default=None, help="Parent version.")
@click.option("--param", "params", multiple=True, type=KEY_VALUE, help="KEY=VALUE (repeatable).")
@click.option(
    "--metric", "metrics", multiple=True, type=KEY_NUMBER, help="KEY=NUMBER (repeatable)."
)
@click.option("--tag", "tags", multiple=True, type=KEY_VALUE, help="KEY=VALUE (repeatable).")
@click.option("--description", default=None, help="Free text.")
@click.option("--idempotency-key", default=None, help="Retries with the same key register once.")
@json_option
@pass_context
def push(
    ctx: Context,
    /,
    model: str,
    artifact: str,
    sha256: str | None,
    size: int | None,
    params: tuple[tuple[str, str], ...],
    metrics: tuple[tuple[str, float], ...],
    tags: tuple[tuple[str, str], ...],
    **fields: Any,
) -> None:
    """Register a new version of MODEL (a retry of the same push registers nothing new).

    A local file given to --artifact is hashed (sha256 and size) and registered as
    file://<absolute path>; any other artifact is a URI and needs --sha256.

    \b
    Example:
        reg push fraud --artifact ./model.onnx --format onnx --run-id run-42 \\
            --param lr=0.01 --metric auc=0.93 --tag team=risk
        reg push fraud --artifact s3://models/fraud/3/model.onnx --sha256 9f86d0…
    """
    uri, digest, artifact_size = _artifact(artifact, sha256, size)
    client = ctx.client()
    record, created = client.push(
        model,
        artifact_uri=uri,
        sha256=digest,
        size=artifact_size,
        format=fields.pop("fmt"),
        params=pairs_dict(params) or None,
        metrics=pairs_dict(metrics) or None,
        tags=pairs_dict(tags) or None,
        **fields,
    )

    def text(r: dict[str, Any]) -> str:
        what = "registered" if created else "already registered (same push), kept"
        return f"{what} {r['model']} v{r['version']} ({uri}, revision {r.get('revision')})"

    emit(ctx, record, text)


def _decision_command(approve: bool) -> click.Command:
    verb = "approve" if approve else "reject"

    @click.command(verb)
    @click.argument("model")
    @click.argument("version", type=VERSION)
    @click.option("--comment", default="", help="Why; recorded with the decision.")
    @json_option
    @pass_context
    def decide(ctx: Context, model: str, version: int, comment: str) -> None:
        client = ctx.client()
        call = client.approve if approve else client.reject
        record = call(model, version, comment)
        emit(
            ctx,
            record,
            lambda r: f"{r['status']} {r['model']} v{r['version']} (revision {r.get('revision')})",
        )

    decide.help = (
        f"{verb.capitalize()} VERSION of MODEL"
        + (
            " so that protected aliases (production) may point at it."
            if approve
            else " so that it is never promoted to a protected alias."
        )
        + " Whoever registered a version cannot decide on it (four eyes)."
        + f"\n\n\b\nExample:\n    reg {verb} fraud 3 --comment 'offline eval passed'"
    )
    return decide


@click.command("archive")
@click.argument("model")
@click.argument("version", type=VERSION)
@click.option("--reason", default="", help="Why; recorded with the archive.")
@json_option
@pass_context
def archive(ctx: Context, model: str, version: int, reason: str) -> None:
    """Archive VERSION of MODEL: it is kept, but no longer `latest` (refused while an alias
    points at it).

    \b
    Example:
        reg archive fraud 1 --reason "superseded by v3"
    """
    record = ctx.client().archive(model, version, reason)
    emit(ctx, record, lambda r: f"archived {r['model']} v{r['version']}")


def _time_option(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None
    return value


@click.command("search")
@click.option("--model", default=None, help="Only versions of this model.")
@click.option("--status", type=STATUSES, default=None, help="Only versions with this status.")
@click.option("--tag", "tags", multiple=True, type=KEY_VALUE, help="KEY=VALUE (repeatable, all).")
@click.option("--run-id", default=None, help="Only versions from this training run.")
@click.option("--alias", default=None, help="Only versions an alias of this name points at.")
@click.option("--since", default=None, help="Created at or after this RFC 3339 time.")
@click.option("--until", default=None, help="Created before this RFC 3339 time.")
@page_options
@json_option
@pass_context
def search(
    ctx: Context,
    model: str | None,
    status: str | None,
    tags: tuple[tuple[str, str], ...],
    run_id: str | None,
    alias: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    page_token: str | None,
) -> None:
    """Search versions across models; every filter given must match.

    \b
    Example:
        reg search --model fraud --status approved
        reg search --tag team=risk --since 2026-11-01T00:00:00Z --json
    """
    page = ctx.client().search_versions(
        model=model,
        status=status,
        tags=pairs_dict(tags),
        run_id=run_id,
        alias=alias,
        created_after=_time_option(since, "--since"),
        created_before=_time_option(until, "--until"),
        limit=limit,
        page_token=page_token,
    )
    emit(ctx, page, lambda p: versions_table(p["items"]) if p.get("items") else "no versions")
    next_page_hint(ctx, page)


def register(root: click.Group) -> None:
    """Add ``reg push|approve|reject|archive|search`` to ``root``."""
    for command in (push, _decision_command(True), _decision_command(False), archive, search):
        root.add_command(command)
