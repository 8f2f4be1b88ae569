"""Acknowledging a write only once it is in the replica: ``?wait=replicated`` and ``write_ack``.

A normal write is acknowledged when SQLite's ``COMMIT`` returned (durable on central's disk);
Litestream ships it within ``sync_interval_s``. So a crash of the *process* loses nothing, but
the loss of the *host* (disk and all) before the next sync loses what was acknowledged since
the last one: the replicated-write RPO is one sync interval (docs/OPERATIONS.md, "Durability").

A write made with ``?wait=replicated`` (or every write when the setting ``write_ack`` is
``replicated``) is acknowledged only once Litestream has uploaded it: after ``COMMIT``,
:class:`ReplicationBarrier` asks litestream, over its control socket, to sync the databases
the write changed (registry.db; secrets.db too for a token change) and to wait until the
replica holds them (litestream 0.5.17's ``POST /sync`` with
``"wait": true``, the call behind ``litestream sync -wait``), and checks that the replica's
TXID reached the local one. One sync serves every write committed before it started, so
concurrent waiting writes share round trips (group commit, once more).

If the replica does not confirm within ``replicated_timeout_s`` the write still stands — it is
committed and ships when the store is back — but the caller gets :class:`NotReplicated`
(503 ``not_replicated``, with the write's ``revision`` and ``revision_hash``) instead of an
acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from modelreg.central.appkeys import CONFIG, REPLICATOR
from modelreg.central.config import WRITE_ACK_MODES as ACK_MODES
from modelreg.errors import InvalidField, NotReplicated

__all__ = [
    "ACK_MODES",
    "ReplicationBarrier",
    "SyncFailed",
    "ack_middleware",
    "control_socket_path",
]

log = logging.getLogger(__name__)

#: HTTP methods that write.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Longest Unix socket path we create (the kernel's limit is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
#: Pause between two attempts to reach a litestream that is (re)starting, in seconds.
_RETRY_S = 0.1


class SyncFailed(Exception):
    """Litestream could not confirm that the replica holds every committed transaction."""


def control_socket_path(data_dir: Path) -> Path:
    """Where litestream's control socket lives: in the data directory when the path is short
    enough for a Unix socket, else under the temporary directory (named after the data dir)."""
    inside = data_dir.resolve() / ".litestream.sock"
    if len(str(inside)) <= _MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"modelreg-ls-{digest}.sock"


class ReplicationBarrier:
    """Waits until the replica holds every transaction of one database committed before
    :meth:`wait` was called.

    ``db_path`` is the database as litestream's config names it. The constructor does no I/O;
    :meth:`close` releases the HTTP session.
    """

    def __init__(self, socket_path: Path, db_path: Path, timeout_s: float) -> None:
        self._socket_path = socket_path
        self._db_path = str(db_path.resolve())
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._waiting: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        #: Syncs run, and the writes they confirmed (for /metrics).
        self.syncs = 0
        self.confirmed = 0
        self.failures = 0

    async def wait(self) -> None:
        """Return once a sync that started after this call confirmed every database.

        Raises :class:`SyncFailed` when litestream cannot confirm within the timeout.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="replication-barrier")
        await asyncio.shield(future)

    async def close(self) -> None:
        """Fail the waiting writes and close the session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for future in self._waiting:
            if not future.done():
                future.set_exception(SyncFailed("central is stopping"))
        self._waiting = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._sync_all()
            except SyncFailed as exc:
                self.failures += 1
                for future in batch:
                    if not future.done():
                        future.set_exception(SyncFailed(str(exc)))
                continue
            except asyncio.CancelledError:
                for future in batch:
                    if not future.done():
                        future.set_exception(SyncFailed("central is stopping"))
                raise
            self.syncs += 1
            self.confirmed += len(batch)
            for future in batch:
                if not future.done():
                    future.set_result(None)

    async def _sync_all(self) -> None:
        await self._sync(self._db_path, time.monotonic() + self._timeout_s)

    async def _sync(self, db_path: str, deadline: float) -> None:
        """One ``POST /sync`` with ``wait``, retried while litestream is (re)starting."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self._socket_path))
            )
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SyncFailed(f"the replica did not confirm {db_path} in time ({last})")
            body = {"path": db_path, "wait": True, "timeout": max(1, int(remaining))}
            try:
                async with self._session.post(
                    "http://litestream/sync",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=remaining),
                ) as answer:
                    text = await answer.text()
                    status = answer.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"litestream unreachable: {exc.__class__.__name__}"
                await asyncio.sleep(min(_RETRY_S, max(0.0, deadline - time.monotonic())))
                continue
            result = _parse(text)
            if status == 200 and _confirmed(result):
                return
            last = str(result.get("error") or f"HTTP {status}: {text[:200]}")
            await asyncio.sleep(min(_RETRY_S, max(0.0, deadline - time.monotonic())))


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _confirmed(result: dict[str, Any]) -> bool:
    """A ``/sync`` answer that proves the replica holds the local position."""
    txid, replicated = result.get("txid"), result.get("replicated_txid")
    return (
        result.get("status") in ("synced", "no_change")
        and isinstance(txid, int)
        and isinstance(replicated, int)
        and replicated >= txid
    )


def _mode(request: web.Request) -> str:
    raw = request.query.get("wait")
    mode = request.app[CONFIG].write_ack if raw is None else raw
    if mode not in ACK_MODES:
        raise InvalidField(
            f"wait must be {' or '.join(ACK_MODES)}, got {str(raw)[:40]!r}", field="wait"
        )
    return mode


@web.middleware
async def ack_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Hold a successful ``/v1`` write's answer until the replica has it, when asked to.

    Raises :class:`InvalidField` (before the write) for a bad ``wait`` or ``wait=replicated``
    without replication, and :class:`NotReplicated` (after it) when the replica does not
    confirm in time.
    """
    if request.method not in WRITE_METHODS or not request.path.startswith("/v1/"):
        return await handler(request)
    mode = _mode(request)
    replicator = request.app.get(REPLICATOR)
    if mode == "replicated" and replicator is None:
        raise InvalidField(
            "wait=replicated needs replication (central runs with --replica none)", field="wait"
        )
    response: web.StreamResponse = await handler(request)
    if mode != "replicated" or response.status >= 300 or replicator is None:
        return response
    started = time.monotonic()
    # Token and webhook changes write secrets.db too; every other write only registry.db.
    secrets_too = request.path.startswith(("/v1/tokens", "/v1/webhooks"))
    names = ("registry", "secrets") if secrets_too else ("registry",)
    try:
        await asyncio.gather(*(replicator.barriers[name].wait() for name in names))
    except SyncFailed as exc:
        text = response.text if isinstance(response, web.Response) else None
        written = _parse(text) if text else {}
        log.warning(
            "write %s %s not confirmed by the replica: %s", request.method, request.path, exc
        )
        raise NotReplicated(
            "the write is committed on central but the replica did not confirm it in time; it "
            "ships when the object store answers again (do not blindly retry a write that is "
            "not idempotent)",
            revision=written.get("revision"),
            revision_hash=written.get("revision_hash"),
            waited_ms=round((time.monotonic() - started) * 1000),
        ) from None
    response.headers["X-Modelreg-Ack"] = "replicated"
    return response
