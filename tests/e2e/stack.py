"""A real ``reg up`` stack for end-to-end tests: start it, wait for it, find its processes.

:func:`start_up` runs the installed ``reg up`` in a short temporary directory (Unix socket paths
are limited to ~100 bytes) on a free port, with short replication intervals so that writes reach
the sidecar quickly. :meth:`UpProc.stop` sends SIGINT, like Ctrl-C, then waits, then kills.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.procs import BIN_DIR, free_port, stop_process

__all__ = [
    "READY_MARKER",
    "STACK_ENV",
    "UpProc",
    "live_pids",
    "process_tree",
    "run_up",
    "short_tempdir",
    "start_up",
]

#: The line ``reg up`` prints once central and the sidecar are both ready.
READY_MARKER = "Try next"
#: Seconds ``reg up`` may take to be ready (central, litestream's first sync, sidecar restore).
START_TIMEOUT_S = 90.0
#: Short intervals: central syncs and beats every 0.2 s / 0.5 s, the sidecar polls every 0.2 s.
STACK_ENV = {
    "REG_SYNC_INTERVAL_S": "0.2",
    "REG_HEARTBEAT_INTERVAL_S": "0.5",
    "REG_SIDECAR_FOLLOW_INTERVAL_S": "0.2",
    "PYTHONUNBUFFERED": "1",
}


def short_tempdir(prefix: str = "up-") -> Path:
    """A fresh directory directly under the system temp dir (short enough for sockets)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))


class UpProc:
    """One running ``reg up``: its process, its output file, its data directory and URL."""

    def __init__(
        self, proc: subprocess.Popen[bytes], workdir: Path, data_dir: Path, port: int, out: Path
    ) -> None:
        self.proc = proc
        self.workdir = workdir
        self.data_dir = data_dir
        self.port = port
        self.out_path = out

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return self.data_dir / "sidecar.sock"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def child_pid(self, name: str) -> int:
        """The PID reg up printed for its child ``name`` (``central`` or ``sidecar``)."""
        found = re.search(rf"starting {name} \(pid (\d+)\)", self.output())
        assert found is not None, f"no pid of {name} in:\n{self.output()}"
        return int(found.group(1))

    def env(self, bin_dir: Path = BIN_DIR) -> dict[str, str]:
        """The environment a user's second terminal would have: venv first, this stack's URL."""
        return {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "REG_CENTRAL_URL": self.url,
            "REG_DATA_DIR": str(self.data_dir),
            "REG_SOCKET": str(self.socket),
        }

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait for the ready line; raise AssertionError (with the output) if it never comes."""
        deadline = time.monotonic() + timeout
        while READY_MARKER not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"reg up exited with {self.proc.returncode} before it was ready:\n"
                    + self.output()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"reg up not ready after {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig`` (Ctrl-C by default), wait up to ``timeout`` s, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return stop_process(self.proc, signal.SIGKILL)
        return self.proc.wait()


def run_up(
    workdir: Path,
    port: int,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    bin_dir: Path = BIN_DIR,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``reg up --data-dir .reg --listen 127.0.0.1:PORT ARGS`` in ``workdir``, with the
    ``reg`` of ``bin_dir`` (this interpreter's by default).

    Returns the process and the file its output goes to.
    """
    out = workdir / f"up-{time.monotonic_ns()}.out"
    full_env = {**os.environ, **STACK_ENV, **(env or {})}
    with open(out, "wb") as handle:
        proc = subprocess.Popen(
            [
                str(bin_dir / "reg"),
                "up",
                "--data-dir",
                ".reg",
                "--listen",
                f"127.0.0.1:{port}",
                *args,
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    return proc, out


def start_up(
    workdir: Path | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    wait: bool = True,
    bin_dir: Path = BIN_DIR,
) -> UpProc:
    """Start ``reg up`` in ``workdir`` (a fresh short temp dir by default) and wait until ready.

    ``bin_dir`` holds the ``reg`` to run (this interpreter's by default; another virtualenv's
    for the installed-wheel test). The caller stops it (``UpProc.stop``) in a ``finally``.
    """
    workdir = workdir or short_tempdir()
    port = port or free_port()
    proc, out = run_up(workdir, port, args, bin_dir=bin_dir)
    up = UpProc(proc, workdir, (workdir / ".reg").resolve(), port, out)
    if wait:
        try:
            up.wait_ready()
        except BaseException:
            up.stop()
            raise
    return up


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, session id)`` of ``pid`` from /proc, or None if it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def live_pids() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (ppid, session id)."""
    result: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                result[int(entry)] = stat
    return result


def process_tree(root: int) -> set[int]:
    """``root``'s descendants, plus every process in a session one of them leads."""
    table = live_pids()
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    sessions = {pid for pid in found if table[pid][1] == pid}
    found |= {pid for pid, (_, sid) in table.items() if sid in sessions}
    return found
