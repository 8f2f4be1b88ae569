"""``reg central serve`` and ``reg central status``: run central, or ask one how it is doing.

``serve`` builds the :class:`~modelreg.central.config.CentralConfig` once (flags > ``REG_*``
environment > ``--config`` file > defaults), then runs :func:`modelreg.central.app.create_app` under
uvloop. SIGTERM or SIGINT stops it gracefully: the listener closes first, then replication is
flushed (litestream syncs once more), then the databases close; the exit code is 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from modelreg.cli.context import EXIT_UNAVAILABLE, Context, command_error, json_option, pass_context
from modelreg.cli.output import emit, fields_text

__all__ = ["register"]

log = logging.getLogger("reg.central")

#: Listen backlog of central's HTTP socket (a deploy storm may open many connections at once).
BACKLOG = 1024


def _flags(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def build_config(
    data_dir: Path | None,
    listen: str | None,
    replica: str | None,
    sync_interval: float | None,
    heartbeat_interval: float | None,
    force: bool,
    config_file: Path | None,
    webhook_allow_private: bool = False,
) -> Any:
    """The config of ``serve``: :func:`modelreg.central.config.load`, then the replica default.

    No replica given anywhere: ``file://<absolute data dir>/replica``; ``none`` disables it.
    Raises :class:`modelreg.central.config.ConfigError`.
    """
    from modelreg.central.config import load

    config = load(
        _flags(
            data_dir=data_dir,
            listen=listen,
            replica_url=replica,
            sync_interval_s=sync_interval,
            heartbeat_interval_s=heartbeat_interval,
            force=True if force else None,
            webhook_allow_private=True if webhook_allow_private else None,
        ),
        config_file=config_file,
    )
    if config.replica_url is None:
        default = f"file://{config.data_dir.resolve()}/replica"
        config = dataclasses.replace(config, replica_url=default)
    elif config.replica_url.strip().lower() == "none":
        config = dataclasses.replace(config, replica_url=None)
    return config


class StartupError(Exception):
    """Central's databases could not be opened; the message says which and why."""


def _startup_error(config: Any, exc: BaseException) -> StartupError:
    from modelreg.central.schema import SchemaTooNew

    if isinstance(exc, SchemaTooNew):
        return StartupError(f"{config.data_dir}: {exc}")
    if isinstance(exc, OSError):
        return StartupError(f"cannot use data directory {config.data_dir}: {exc.strerror or exc}")
    return StartupError(f"cannot open the databases in {config.data_dir}: {exc}")


async def serve(config: Any) -> None:
    """Run central until SIGTERM/SIGINT. Raises ReplicationError, :class:`StartupError` (the
    databases) and OSError (the listening socket) on start-up."""
    import sqlite3

    from aiohttp import web

    from modelreg.central.app import create_app
    from modelreg.central.lease import LeaseHeld
    from modelreg.central.schema import SchemaTooNew

    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await runner.setup()  # runs the cleanup contexts' start-up: restore, open, replicate
        except LeaseHeld as exc:
            raise StartupError(str(exc)) from None
        except (SchemaTooNew, sqlite3.Error, OSError) as exc:
            raise _startup_error(config, exc) from exc
        site = web.TCPSite(runner, config.host, config.port, backlog=BACKLOG)
        await site.start()
        host, port = runner.addresses[0][:2]
        token_file = config.admin_token_file.resolve()
        click.echo(f"central listening on http://{host}:{port} (admin token in {token_file})")
        sys.stdout.flush()
        await stop.wait()
        log.info("stopping: no new requests, flushing replication")
    finally:
        await runner.cleanup()  # stops the listener, then unwinds the contexts in reverse
    log.info("stopped")


def register(root: click.Group) -> None:
    """Add ``reg central serve|status`` to ``root``."""

    @root.group("central")
    def central() -> None:
        """Run central (the writer) or check on it.

        \b
        Example:
            reg central serve --data-dir /var/lib/modelreg
            reg central status
        """

    @central.command("serve")
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Directory for registry.db, secrets.db, admin.token  [default: .reg]",
    )
    @click.option("--listen", default=None, help="host:port to serve on  [default: 127.0.0.1:8080]")
    @click.option(
        "--replica",
        default=None,
        metavar="URL",
        help="Replica base URL: file:///path, s3://bucket/prefix?endpoint=URL&region=R, or "
        "none  [default: file://<data-dir>/replica]",
    )
    @click.option(
        "--sync-interval",
        type=click.FloatRange(min=0.01),
        default=None,
        help="Seconds between litestream syncs  [default: 1.0]",
    )
    @click.option(
        "--heartbeat-interval",
        type=click.FloatRange(min=0),
        default=None,
        help="Seconds between heartbeats, 0 disables  [default: 2.0]",
    )
    @click.option(
        "--force",
        is_flag=True,
        help="Start even when the data directory is older than its replica (overwrites "
        "the replica's newer history), or take over an S3 lease.",
    )
    @click.option(
        "--webhook-allow-private",
        is_flag=True,
        help="Let webhooks target loopback and private addresses (link-local ones, such as "
        "cloud metadata, stay refused).",
    )
    @click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="Settings file (TOML or JSON); flags and REG_* variables override it.",
    )
    @click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        show_default=True,
        help="Log verbosity (litestream's lines are logged as 'litestream: ...').",
    )
    def serve_cmd(
        data_dir: Path | None,
        listen: str | None,
        replica: str | None,
        sync_interval: float | None,
        heartbeat_interval: float | None,
        force: bool,
        webhook_allow_private: bool,
        config_file: Path | None,
        log_level: str,
    ) -> None:
        """Run central: the REST API, the registry database and its replication.

        Restores missing databases from the replica first, refuses a data directory that is
        older than its replica (unless --force) and a replica another central holds.

        \b
        Example:
            reg central serve --data-dir /var/lib/modelreg --listen 127.0.0.1:8080
            reg central serve --replica 's3://bucket/modelreg?endpoint=https://minio:9000'
            reg central serve --webhook-allow-private   # receivers inside your network
        """
        import uvloop

        from modelreg.central.config import ConfigError
        from modelreg.central.replication import ReplicationError

        parent = click.get_current_context().find_root()
        if data_dir is None and parent.get_parameter_source("data_dir") not in (
            None,
            click.core.ParameterSource.DEFAULT,
        ):
            data_dir = parent.params.get("data_dir")
        logging.basicConfig(
            level=log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
            stream=sys.stderr,
        )
        try:
            config = build_config(
                data_dir,
                listen,
                replica,
                sync_interval,
                heartbeat_interval,
                force,
                config_file,
                webhook_allow_private,
            )
        except ConfigError as exc:
            raise command_error(str(exc), 2) from None
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(serve(config))
        except ReplicationError as exc:
            raise command_error(f"replication: {exc}") from None
        except StartupError as exc:
            raise command_error(str(exc)) from None
        except OSError as exc:
            raise command_error(f"cannot serve on {config.listen}: {exc.strerror or exc}") from None

    @central.command("status")
    @json_option
    @pass_context
    def status_cmd(ctx: Context) -> None:
        """Show a central's revision and replication state (from its /healthz).

        \b
        Example:
            reg --central http://127.0.0.1:8080 central status
            reg central status --json
        """
        url = ctx.central_url + "/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                health = json.loads(response.read())
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise command_error(
                f"central at {ctx.central_url} is unavailable: {reason}", EXIT_UNAVAILABLE
            ) from None
        emit(ctx, health, _status_text)


def _status_text(health: dict[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [
        ("status", health.get("status")),
        ("revision", health.get("revision")),
    ]
    replication = health.get("replication")
    if not replication:
        pairs.append(("replication", "off"))
    else:
        pairs += [
            ("replica", replication.get("url")),
            ("litestream", "running" if replication.get("running") else "not running"),
            ("pid", replication.get("pid")),
            ("restarts", replication.get("restarts")),
            ("last sync", replication.get("last_sync_at")),
            ("local txid", replication.get("local_txid")),
            ("replica txid", replication.get("replica_txid")),
            ("lag (txids)", replication.get("lag")),
        ]
        if replication.get("last_error"):
            pairs.append(("last error", replication.get("last_error")))
    return fields_text(pairs)
