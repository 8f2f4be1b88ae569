"""``reg resolve``, ``reg watch`` and ``reg status``: this node's view, through its sidecar.

These commands speak to the sidecar on ``--socket`` (``REG_SOCKET``) with the same
:class:`modelreg.sidecar.client.Client` serving code uses; ``reg resolve --central`` and
``reg resolve --at`` ask central instead (point-in-time answers only central keeps).
Library errors become exit codes at the root group: 3 not found, 5 sidecar unavailable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from modelreg.central.records import format_time, parse_time
from modelreg.cli.context import Context, json_option, pass_context
from modelreg.cli.output import emit, fields_text, value_text, version_text
from modelreg.sidecar.client import Client, ResolvedModel

__all__ = [
    "CONNECT_DEADLINE_S",
    "lookups_per_s",
    "parse_model_ref",
    "register",
    "status_text",
]

#: Seconds a command keeps retrying a missing or refusing sidecar socket before exit code 5.
CONNECT_DEADLINE_S = 2.0


def parse_model_ref(text: str) -> tuple[str, str]:
    """Split ``MODEL@REF`` (``MODEL`` alone means ``MODEL@latest``).

    Raises ``click.BadParameter`` (exit code 2) for an empty model or ref.
    """
    model, sep, ref = text.partition("@")
    if not sep:
        ref = "latest"
    if not model or not ref:
        raise click.BadParameter(
            f"expected MODEL@REF (e.g. fraud@production, fraud@3, fraud@latest), got {text!r}",
            param_hint="MODEL@REF",
        )
    return model, ref


def _client(ctx: Context) -> Client:
    return Client(ctx.socket, connect_deadline_s=CONNECT_DEADLINE_S)


def _answer(model: ResolvedModel) -> dict[str, Any]:
    """A sidecar answer in the shape of central's resolve answer, plus freshness."""
    return {
        "model": model.model,
        "ref": model.ref,
        "version": dict(model.raw),
        "revision": model.revision,
        "age_ms": model.age_ms,
        "source": "sidecar",
    }


def _resolve_text(answer: Mapping[str, Any]) -> str:
    record = answer.get("version") or {}
    lines = [f"{answer.get('model')}@{answer.get('ref')} -> v{record.get('version')}"]
    lines.append(version_text(record))
    if answer.get("source") == "sidecar":
        lines.append(
            fields_text(
                [
                    ("answered by", "sidecar"),
                    ("revision", answer.get("revision")),
                    ("age", _duration_ms(answer.get("age_ms"))),
                ]
            )
        )
    else:
        pairs: list[tuple[str, Any]] = [("answered by", "central")]
        if answer.get("at"):
            pairs.append(("as of", answer["at"]))
        lines.append(fields_text(pairs))
    return "\n".join(lines)


@click.command("resolve")
@click.argument("model_ref", metavar="MODEL@REF")
@click.option(
    "--at",
    "at",
    default=None,
    metavar="TIME",
    help="What the ref pointed at then (RFC 3339); asks central.",
)
@click.option(
    "--central",
    "use_central",
    is_flag=True,
    help="Ask central instead of this node's sidecar.",
)
@click.option(
    "--min-revision",
    type=click.IntRange(min=0),
    default=None,
    help="Sidecar only: wait until its copy has reached this registry revision.",
)
@click.option(
    "--wait-ms",
    type=click.IntRange(min=0),
    default=None,
    help="How long --min-revision may wait, in milliseconds (default: the sidecar's).",
)
@click.option(
    "--revision-hash",
    default=None,
    metavar="HEX",
    help="With --min-revision: the revision_hash central answered the write with; refuse "
    "a history where that revision is another event (issued again after a loss).",
)
@json_option
@pass_context
def resolve_cmd(
    ctx: Context,
    model_ref: str,
    at: str | None,
    use_central: bool,
    min_revision: int | None,
    wait_ms: int | None,
    revision_hash: str | None,
) -> None:
    """Which version MODEL@REF is: REF is an alias, a version number or `latest`.

    Answers from this node's sidecar (microseconds, works while central is down) unless
    --central or --at is given.

    \b
    Example:
        reg resolve fraud@production
        reg resolve fraud@production --min-revision 42 --wait-ms 5000
        reg resolve fraud@production --min-revision 42 --revision-hash 9f2c...
        reg resolve fraud@production --at 2026-11-01T12:00:00Z
        reg --json resolve fraud@3 --central
    """
    model, ref = parse_model_ref(model_ref)
    if at is not None or use_central:
        if min_revision is not None or wait_ms is not None or revision_hash is not None:
            raise click.UsageError(
                "--min-revision, --wait-ms and --revision-hash apply to the sidecar only"
            )
        moment: datetime | None = None
        if at is not None:
            try:
                moment = parse_time(at)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--at") from None
        answer = dict(ctx.client().resolve(model, ref, at=moment))
        answer["source"] = "central"
        if moment is not None:
            answer["at"] = format_time(moment)
        emit(ctx, answer, _resolve_text)
        return
    if (wait_ms is not None or revision_hash is not None) and min_revision is None:
        raise click.UsageError("--wait-ms and --revision-hash need --min-revision")
    with _client(ctx) as client:
        resolved = client.resolve(
            model, ref, min_revision=min_revision, wait_ms=wait_ms, revision_hash=revision_hash
        )
    emit(ctx, _answer(resolved), _resolve_text)


def _watch_line(answer: Mapping[str, Any]) -> str:
    record = answer.get("version") or {}
    artifact = record.get("artifact") or {}
    sha = str(artifact.get("sha256") or "")
    return (
        f"{format_time(datetime.now(UTC))}  {answer.get('model')}@{answer.get('ref')} -> "
        f"v{record.get('version')} ({record.get('status')})  {artifact.get('uri')}  "
        f"sha256 {sha[:12]}  revision {answer.get('revision')}  "
        f"age {_duration_ms(answer.get('age_ms'))}"
    )


@click.command("watch")
@click.argument("model_ref", metavar="MODEL@REF")
@json_option
@pass_context
def watch_cmd(ctx: Context, model_ref: str) -> None:
    """Print MODEL@REF now and one line each time it changes, until Ctrl-C.

    Reconnects by itself when the sidecar restarts. With --json each line is one JSON object.

    \b
    Example:
        reg watch fraud@production
        reg --json watch fraud@canary | jq .version.version
    """
    model, ref = parse_model_ref(model_ref)
    with _client(ctx) as client:
        client.ping()  # a sidecar that is not there at all is an error now, not a silent wait
        stream = client.watch(model, ref)
        try:
            for resolved in stream:
                answer = _answer(resolved)
                if ctx.json:
                    click.echo(json.dumps(answer, ensure_ascii=False))
                else:
                    click.echo(_watch_line(answer))
        except KeyboardInterrupt:
            pass
        finally:
            stream.close()


def _duration_ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value < 1000:
        return f"{value:.0f} ms"
    return _duration_s(value / 1000)


def _duration_s(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    seconds = int(value)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts += [f"{minutes}m", f"{seconds}s"]
    return " ".join(parts)


def lookups_per_s(status: Mapping[str, Any]) -> float | None:
    """Lookups per second: the sidecar's own rate if it reports one, else the average since
    start (``lookups / uptime_s``)."""
    rate = status.get("lookups_per_s")
    if isinstance(rate, int | float):
        return float(rate)
    lookups, uptime = status.get("lookups"), status.get("uptime_s")
    if isinstance(lookups, int | float) and isinstance(uptime, int | float) and uptime > 0:
        return lookups / uptime
    return None


def _rate_basis(status: Mapping[str, Any]) -> str:
    if status.get("lookups_per_s_basis") == "since start":
        return " since start"
    return "" if isinstance(status.get("lookups_per_s"), int | float) else " since start"


def status_text(status: Mapping[str, Any]) -> str:
    """The node view of ``reg status`` for people."""
    follower = status.get("follower") or {}
    freshness = "STALE" if status.get("stale") else "fresh"
    if not status.get("ready"):
        freshness = "NOT READY (no local copy yet)"
    rate = lookups_per_s(status)
    follower_text = str(follower.get("state") or "-")
    if follower.get("error"):
        follower_text += f": {follower['error']}"
    if follower.get("pid"):
        follower_text += f" (pid {follower['pid']}, restarts {follower.get('restarts', 0)})"
    elif follower.get("restarts"):
        follower_text += f" (restarts {follower['restarts']})"
    loaded = status.get("loaded_at")
    if isinstance(loaded, int | float):
        loaded = format_time(datetime.fromtimestamp(loaded, UTC))
    pairs: list[tuple[str, Any]] = [
        ("sidecar", status.get("socket")),
        ("state", freshness),
        ("reason", status.get("reason") or None),
        ("revision", status.get("revision")),
        ("age", _duration_ms(status.get("age_ms"))),
        ("diverged", _diverged_text(status.get("diverged"))),
        ("follower", follower_text),
        ("models", status.get("models")),
        ("versions", status.get("versions")),
        (
            "index",
            f"loaded {value_text(loaded)} in {value_text(status.get('index_load_ms'))} ms",
        ),
        ("connections", status.get("connections")),
        ("watches", status.get("watches")),
        (
            "lookups",
            f"{value_text(status.get('lookups'))}"
            + (f" ({rate:.1f}/s{_rate_basis(status)})" if rate is not None else ""),
        ),
        ("errors", status.get("errors")),
        ("uptime", _duration_s(status.get("uptime_s"))),
    ]
    return fields_text([(label, value) for label, value in pairs if value is not None])


def _diverged_text(diverged: Any) -> str | None:
    """The other history the replica holds, and what to do about it (None: not diverged)."""
    if not isinstance(diverged, Mapping):
        return None
    return (
        f"the replica holds another history (revision {diverged.get('revision')}, event "
        f"{str(diverged.get('hash') or '-')[:12]}); serving revision "
        f"{diverged.get('served_revision')} until `reg sidecar adopt`"
        + (f" or {diverged.get('grace_s'):g} s" if diverged.get("grace_s") else "")
    )


@click.command("status")
@json_option
@pass_context
def status_cmd(ctx: Context) -> None:
    """This node's sidecar: revision, age, stale or fresh, follower, index, load, uptime.

    Exit code 5 when no sidecar answers on --socket. --json prints the sidecar's status
    (docs/PROTOCOL.md) plus "socket" and "lookups_per_s" (the average since the sidecar
    started when it reports no rate itself; "lookups_per_s_basis" then says so).

    \b
    Example:
        reg status
        reg --socket /run/modelreg/sidecar.sock status --json
    """
    with _client(ctx) as client:
        status = client.status()
    status.setdefault("socket", str(ctx.socket))
    if not isinstance(status.get("lookups_per_s"), int | float):
        rate = lookups_per_s(status)
        if rate is not None:
            status["lookups_per_s"] = round(rate, 3)
            status["lookups_per_s_basis"] = "since start"
    emit(ctx, status, status_text)


def register(root: click.Group) -> None:
    """Add ``resolve``, ``watch`` and ``status`` to ``reg``."""
    root.add_command(resolve_cmd)
    root.add_command(watch_cmd)
    root.add_command(status_cmd)
