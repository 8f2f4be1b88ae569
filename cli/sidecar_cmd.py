"""``reg sidecar run``: the node daemon that follows the replica and answers lookups."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

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


def register(root: click.Group) -> None:
    """Add ``reg sidecar`` to the root group."""
    root.add_command(sidecar)
