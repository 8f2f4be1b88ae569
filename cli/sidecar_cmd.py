"""``reg sidecar run``: the node daemon that follows the replica and answers lookups."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import click

from modelreg.cli.context import EXIT_UNAVAILABLE, Context, command_error, json_option, pass_context
from modelreg.cli.output import emit
from modelreg.sidecar import config as sidecar_config

__all__ = ["register"]


@click.group("sidecar")
def sidecar() -> None:
    """The node daemon: follows the replica and answers lookups on a local socket.

    \b
    Example:
        reg sidecar run --replica s3://models-bucket/registry?region=eu-west-1
    """


@sidecar.command("run")
@click.option(
    "--replica",
    "replica_url",
    default=None,
    help="Base replica URL as given to central [default: file://<abs .reg>/replica].",
)
@click.option(
    "--data-dir",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Directory for restored copies [default: {sidecar_config.DEFAULT_DATA_DIR}].",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=None,
    help=f"msgpack socket [default: {sidecar_config.DEFAULT_SOCKET_PATH}].",
)
@click.option(
    "--http-socket",
    default=None,
    help=f"JSON/HTTP Unix socket, or 'none' [default: {sidecar_config.DEFAULT_HTTP_SOCKET_PATH}].",
)
@click.option(
    "--http-port",
    type=int,
    default=None,
    help="Also serve JSON/HTTP on 127.0.0.1:PORT (0 picks one).",
)
@click.option(
    "--follow-interval",
    "follow_interval_s",
    type=float,
    default=None,
    help=f"Seconds between replica polls [default: {sidecar_config.DEFAULT_FOLLOW_INTERVAL_S:g}].",
)
@click.option(
    "--stale-after",
    "stale_after_s",
    type=float,
    default=None,
    help=f"Stale after this heartbeat age [default: {sidecar_config.DEFAULT_STALE_AFTER_S:g} s].",
)
@click.option(
    "--socket-mode", default=None, help="Octal permission bits of the sockets [default: 0660]."
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help=f"Connection limit [default: {sidecar_config.DEFAULT_MAX_CONNECTIONS}].",
)
@click.option(
    "--idle-timeout",
    "idle_timeout_s",
    type=float,
    default=None,
    help="Close connections idle this long, seconds; 0 never "
    f"[default: {sidecar_config.DEFAULT_IDLE_TIMEOUT_S:g}].",
)
@click.option(
    "--frame-timeout",
    "frame_timeout_s",
    type=float,
    default=None,
    help="Close connections holding a partial frame this long, seconds "
    f"[default: {sidecar_config.DEFAULT_FRAME_TIMEOUT_S:g}].",
)
@click.option("--litestream-bin", default=None, help="Path of the litestream binary.")
@click.option(
    "--diverged-grace",
    "diverged_grace_s",
    type=float,
    default=None,
    help="Adopt another history in the replica after this many seconds; 0 never "
    f"(only `reg sidecar adopt`) [default: {sidecar_config.DEFAULT_DIVERGED_GRACE_S:g}].",
)
def run(**flags: Any) -> None:
    """Follow the replica and serve lookups until SIGTERM/SIGINT.

    Serves its last local copy at once, restores a fresh one beside it, and keeps answering
    from memory while central or object storage is down. Settings also come from
    REG_SIDECAR_* environment variables (flags win).

    \b
    Example:
        reg sidecar run
        reg sidecar run --replica 's3://models/reg?endpoint=http://minio:9000' \\
            --socket /run/reg/sidecar.sock --http-port 9464
    """
    from modelreg.sidecar.daemon import run as run_daemon
    from modelreg.sidecar.follower import LitestreamMissing
    from modelreg.sidecar.server import SocketInUse

    flags["socket"] = flags.pop("socket_path")
    try:
        config = sidecar_config.load(flags, os.environ)
    except sidecar_config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(  # the entry point owns logging; the library modules only log
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        import uvloop

        uvloop.run(run_daemon(config, os.environ, lambda line: click.echo(line)))
    except (LitestreamMissing, SocketInUse) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc.strerror or exc}") from None


#: Seconds ``reg sidecar adopt`` waits for the sidecar to serve the adopted history.
ADOPT_WAIT_S = 60.0


@sidecar.command("adopt")
@click.option(
    "--data-dir",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The sidecar's data directory "
    f"[default: REG_SIDECAR_DATA_DIR, else {sidecar_config.DEFAULT_DATA_DIR}].",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=ADOPT_WAIT_S,
    show_default=True,
    help="Seconds to wait for the sidecar to serve the adopted history (0: do not wait).",
)
@json_option
@pass_context
def adopt(ctx: Context, data_dir: Path | None, wait_s: float) -> None:
    """Let this node's sidecar serve the other history its replica now holds.

    A sidecar never serves a copy whose history does not extend the one it served (the
    replica was deleted and an empty central took over, or central was restored from an old
    backup): it keeps serving its last good copy and reports `diverged` in `reg status`.
    This command asks the running sidecar (on the global --socket) which history it saw,
    writes the request into its data directory (so it needs write access there, not just to
    the socket) and waits until the sidecar serves it.

    \b
    Example:
        reg status                      # diverged: revision 3 (event 5f0c…), serving 41
        reg sidecar adopt --data-dir /var/lib/modelreg/sidecar
    """
    from modelreg.errors import RegistryError
    from modelreg.sidecar.client import Client
    from modelreg.sidecar.history import write_adopt_request

    if data_dir is None:
        data_dir = sidecar_config.load({}, os.environ).data_dir
    try:
        with Client(ctx.socket, connect_deadline_s=2.0) as client:
            diverged = client.status().get("diverged")
            if not diverged:
                raise command_error(
                    f"nothing to adopt: the sidecar on {ctx.socket} serves its own history"
                )
            try:
                write_adopt_request(data_dir, diverged["revision"], diverged["hash"])
            except OSError as exc:
                raise command_error(
                    f"cannot write the adoption request in {data_dir}: {exc.strerror or exc}"
                ) from None
            result = {"requested": diverged, "adopted": False, "revision": None}
            deadline = time.monotonic() + wait_s
            while wait_s > 0:
                status = client.status()
                if not status.get("diverged") and (status.get("revision") or 0) >= int(
                    diverged["revision"]
                ):
                    result.update(adopted=True, revision=status["revision"])
                    break
                if time.monotonic() > deadline:
                    raise command_error(
                        f"the sidecar did not adopt it within {wait_s:g} s (see its log)",
                        EXIT_UNAVAILABLE,
                    )
                time.sleep(0.1)
    except RegistryError as exc:
        raise command_error(
            f"cannot ask the sidecar on {ctx.socket}: {exc.message}", EXIT_UNAVAILABLE
        ) from None
    emit(ctx, result, _adopt_text)


def _adopt_text(result: dict[str, Any]) -> str:
    requested = result["requested"]
    line = (
        f"asked the sidecar to adopt revision {requested['revision']} "
        f"(event {str(requested['hash'])[:12]}) in place of revision "
        f"{requested['served_revision']}"
    )
    if result["adopted"]:
        line += f"\nthe sidecar now serves revision {result['revision']}"
    return line


def register(root: click.Group) -> None:
    """Add ``reg sidecar`` to the root group."""
    root.add_command(sidecar)
