"""Shared pieces of the sidecar benchmarks: processes, percentiles, RSS, result rows.

Every process a harness starts is stopped by it (SIGTERM, wait 5 s, SIGKILL). Sockets live in a
short directory under ``tempfile.gettempdir()`` (Unix socket paths are limited to ~100 bytes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.registry_db import BuiltRegistry, event_hash
from modelreg.errors import RegistryError
from modelreg.sidecar.client import Client

__all__ = [
    "BenchProc",
    "Row",
    "bump_local_copy",
    "install_local_copy",
    "percentile",
    "reg_command",
    "rss_kb",
    "short_tmpdir",
    "start_central",
    "start_echo",
    "start_sidecar",
    "wait_sidecar_ready",
    "wait_until",
]

#: How long a harness waits for a process to become ready, in seconds.
READY_TIMEOUT_S = 120.0


@dataclass
class Row:
    """One line of a benchmark summary: what, the measured value, its baseline, the target."""

    name: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "-"}[self.met]


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in KiB, from ``/proc``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


@contextlib.contextmanager
def short_tmpdir(prefix: str = "rb") -> Iterator[Path]:
    """A fresh directory with a short path under the system temp dir, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``check`` every 5 ms until true; return the seconds it took. Raises TimeoutError."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.005)
    return time.monotonic() - started


def reg_command() -> list[str]:
    """The ``reg`` command of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("reg")
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-c", "from modelreg.cli.main import main; main()"]


class BenchProc:
    """A child process with a log file; ``stop()`` terminates, waits 5 s, then kills."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode


def start_echo(directory: Path) -> tuple[BenchProc, Path]:
    """Start the echo baseline server; return it and its socket path."""
    path = directory / "echo.sock"
    proc = BenchProc(
        [sys.executable, "-m", "benchmarks.echo_server", str(path)], directory / "echo.log"
    )
    try:
        wait_until(lambda: "ready" in proc.log_tail(), READY_TIMEOUT_S, "echo server")
    except BaseException:
        proc.stop()
        raise
    return proc, path


def install_local_copy(db: Path, data_dir: Path) -> Path:
    """Put ``db`` in ``data_dir`` as the sidecar's last good local copy (``replica-1.db``)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    copy = data_dir / "replica-1.db"
    source = sqlite3.connect(db)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()
    (data_dir / "replica-1.db-txid").write_text("0000000000000001\n")
    return copy


def bump_local_copy(copy: Path, model: str = "model-00000", alias: str = "production") -> int:
    """Move ``model@alias`` to its model's version 1 in a local copy and rewrite the copy's
    ``-txid``, as litestream does when it applies a promotion at central: the sidecar then
    reloads. One alias-move event (subject ``model@alias``, as central writes it) is appended.
    Returns the new revision."""
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        revision = int(conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]) + 1
        conn.execute(
            "INSERT INTO events (revision, at, actor, action, subject, details, prev_hash, hash)"
            " VALUES (?, strftime('%Y-%m-%dT%H:%M:%f000Z'), 'bench', 'alias.set', ?, '{}', ?, ?)",
            (revision, f"{model}@{alias}", event_hash(revision - 1), event_hash(revision)),
        )
        conn.execute(
            "UPDATE aliases SET version = 1, revision = ? WHERE name = ?"
            " AND model_id = (SELECT id FROM models WHERE name = ?)",
            (revision, alias, model),
        )
        conn.execute(
            "UPDATE heartbeat SET at = strftime('%Y-%m-%dT%H:%M:%f000Z'), revision = ?",
            (revision,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    txid = copy.with_name(copy.name + "-txid")
    txid.write_text(f"{revision:016x}\n")
    return revision


def start_sidecar(
    directory: Path, *, local_copy: Path | None = None, wait_ready: bool = True
) -> tuple[BenchProc, Path]:
    """Start ``reg sidecar run`` serving ``local_copy`` (already installed in
    ``directory/sidecar``) with an unreachable replica, so nothing but the copy is served."""
    socket_path = directory / "s.sock"
    data_dir = directory / "sidecar"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    args = [
        *reg_command(),
        "sidecar",
        "run",
        "--replica",
        (directory / "no-replica").as_uri(),
        "--data-dir",
        str(data_dir),
        "--socket",
        str(socket_path),
        "--http-socket",
        str(directory / "h.sock"),
        "--stale-after",
        "3600",
    ]
    proc = BenchProc(args, directory / "sidecar.log")
    if wait_ready:
        try:
            wait_sidecar_ready(proc, socket_path)
        except BaseException:
            proc.stop()
            raise
    return proc, socket_path


def wait_sidecar_ready(proc: BenchProc, socket_path: Path) -> float:
    """Wait until the sidecar reports ``ready`` and has finished starting (its ``sidecar
    serving on`` line); return the seconds since it was started."""

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"sidecar exited: {proc.log_tail()}")
        try:
            with Client(socket_path, connect_deadline_s=0.05, timeout_s=5) as client:
                ready = bool(client.status().get("ready"))
        except RegistryError:
            return False
        # Ready answers come before the start-up is over (HTTP server, follower, their
        # imports); steady-state figures wait for the line printed once it is.
        return ready and "sidecar serving on" in proc.log_tail(1_000_000)

    wait_until(ready, READY_TIMEOUT_S, "sidecar")
    return time.monotonic() - proc.started


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_central(directory: Path, db: BuiltRegistry) -> tuple[BenchProc, str, str]:
    """Start ``reg central serve`` on a copy of ``db`` (no replication); return it, its URL
    and the admin token."""
    data_dir = directory / "central"
    data_dir.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(db.path)
    target = sqlite3.connect(data_dir / "registry.db")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    args = [
        *reg_command(),
        "central",
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--replica",
        "none",
        "--heartbeat-interval",
        "0",
    ]
    proc = BenchProc(args, directory / "central.log", env=env)
    token_file = data_dir / "admin.token"

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"central exited: {proc.log_tail()}")
        if not token_file.exists():
            return False
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    try:
        wait_until(ready, READY_TIMEOUT_S, "central")
    except BaseException:
        proc.stop()
        raise
    return proc, url, token_file.read_text().strip()
