"""``reg up``: the whole stack on one machine — central and a sidecar as child processes.

Central runs with the embedded default (data in ``<data-dir>``, a ``file://`` replica under
it) and one sidecar follows that replica on ``<data-dir>/sidecar.sock``. ``reg up`` holds an
exclusive ``flock`` on ``<data-dir>/up.lock`` for as long as it runs, so a second ``reg up`` on
the same data directory refuses before it touches anything. Ctrl-C or SIGTERM stops every child
by PID (sidecar first, then central, which flushes its replication) and leaves the data, so
running it again resumes where it stopped.

The children run in their own sessions (the terminal's Ctrl-C reaches only ``reg up``, which
then stops them in order) with a parent-death signal, so they do not outlive a ``reg up`` that
is killed outright. ``reg up`` is also a child subreaper: what a child leaves behind when it
dies abruptly (its own litestream child) is re-parented to ``reg up`` and stopped with the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit

import click

from modelreg.cli.context import EXIT_CONFLICT, EXIT_ERROR, EXIT_UNAVAILABLE, Context, pass_context

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "LOCK_NAME",
    "AlreadyRunning",
    "StackError",
    "acquire_lock",
    "register",
]

#: Seconds to wait for central and the sidecar to answer before giving up.
DEFAULT_READY_TIMEOUT_S = 60.0
#: Seconds a child gets after SIGTERM before SIGKILL; central flushes replication meanwhile.
SIDECAR_STOP_TIMEOUT_S = 5.0
CENTRAL_STOP_TIMEOUT_S = 15.0
#: Seconds left-over processes in a stopped child's process group get after SIGTERM.
_GROUP_STOP_TIMEOUT_S = 5.0
#: Lock file inside the data directory; holds the PID of the ``reg up`` that owns it.
LOCK_NAME = "up.lock"
#: Seconds between readiness probes and between child liveness checks.
_POLL_S = 0.1
#: Lines of a child's log shown when it fails to start.
_LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_REG_MAIN = "import sys; sys.argv[0] = 'reg'; from modelreg.cli.main import main; main()"


def _reg_argv() -> tuple[str, ...]:
    """How the children are started: the ``reg`` script beside this Python (readable in ``ps``),
    else this Python importing the same entry point; never a PATH lookup."""
    script = Path(sys.executable).parent / "reg"
    if script.is_file():
        return (sys.executable, str(script))
    return (sys.executable, "-c", _REG_MAIN)


class StackError(Exception):
    """``reg up`` cannot bring the stack up; the message says which part and why."""


class AlreadyRunning(StackError):
    """Another ``reg up`` holds the lock on this data directory."""


def acquire_lock(data_dir: Path) -> IO[str]:
    """Take the exclusive lock of ``data_dir`` and write our PID into it.

    The file is opened without truncation, so a refused attempt changes nothing. Raises
    :class:`AlreadyRunning` (naming the holder's PID when known) if another process holds it.
    """
    path = data_dir / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held open for the process's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            handle.close()
            raise
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise AlreadyRunning(
            f"reg up is already running on {data_dir}{who}; stop it first (Ctrl-C in its "
            "terminal) or pick another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _set_parent_death_signal() -> None:
    """In the child, before exec: receive SIGTERM when ``reg up`` dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return


def _become_subreaper() -> bool:
    """Adopt our children's orphans (Linux): if a child dies abruptly and leaves a process of
    its own (a litestream) running, that process is re-parented to ``reg up``, which stops it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _adopted(started: set[int]) -> list[int]:
    """PIDs whose parent is this process, other than the ``started`` children: adopted orphans."""
    me = os.getpid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) in started:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
            found.append(int(entry))
    return found


def stop_adopted(started: set[int], hurry: threading.Event | None = None) -> list[int]:
    """SIGTERM every adopted orphan, reap it, SIGKILL what is left after a grace period.

    Returns the PIDs it stopped.
    """
    pending = _adopted(started)
    stopped = list(pending)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _GROUP_STOP_TIMEOUT_S
    while pending:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.remove(pid)
        if not pending:
            break
        if time.monotonic() > deadline or (hurry is not None and hurry.is_set()):
            for pid in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            break
        time.sleep(_POLL_S)
    return stopped


@dataclass
class Child:
    """One started process: its name, argv, log file and ``Popen`` handle."""

    name: str
    argv: list[str]
    log_path: Path
    stop_timeout_s: float
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process in its own session, its output appended to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- reg up: starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # preexec_fn runs between fork and exec: safe here, reg up starts no threads.
                preexec_fn=_set_parent_death_signal,
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, hurry: threading.Event | None = None) -> int | None:
        """SIGTERM, wait up to ``stop_timeout_s`` (less if ``hurry`` gets set), then SIGKILL.

        Returns the exit code.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_s
            while self.proc.poll() is None:
                if time.monotonic() > deadline or (hurry is not None and hurry.is_set()):
                    self.proc.kill()
                    break
                time.sleep(_POLL_S)
            self.proc.wait()
        self._stop_group(hurry)
        return self.proc.returncode

    def _stop_group(self, hurry: threading.Event | None) -> None:
        """Stop what the child left behind in its process group (a litestream it started).

        The child leads its own session and group (``start_new_session``), so its group ID is
        its PID; a child that dies abruptly may leave its own children running there.
        """
        assert self.proc is not None
        group = self.proc.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return  # nothing left
        deadline = time.monotonic() + _GROUP_STOP_TIMEOUT_S
        while time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(_POLL_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])


@dataclass(frozen=True)
class Layout:
    """Where everything of one ``reg up`` lives; all paths absolute."""

    data_dir: Path
    listen: str

    @property
    def central_url(self) -> str:
        return f"http://{self.listen}"

    @property
    def replica_url(self) -> str:
        return f"file://{self.data_dir / 'replica'}"

    @property
    def socket(self) -> Path:
        return self.data_dir / "sidecar.sock"

    @property
    def http_socket(self) -> Path:
        return self.data_dir / "sidecar-http.sock"

    @property
    def sidecar_dir(self) -> Path:
        return self.data_dir / "sidecar"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def central_argv(self) -> list[str]:
        return [
            *_reg_argv(),
            "central",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.listen,
            "--replica",
            self.replica_url,
        ]

    def sidecar_argv(self) -> list[str]:
        return [
            *_reg_argv(),
            "sidecar",
            "run",
            "--replica",
            self.replica_url,
            "--data-dir",
            str(self.sidecar_dir),
            "--socket",
            str(self.socket),
            "--http-socket",
            str(self.http_socket),
        ]


class Stopping(Exception):
    """A signal asked ``reg up`` to stop while it was still starting."""


class Signals:
    """SIGINT/SIGTERM/SIGHUP set a flag instead of raising; restored on exit.

    The first signal sets :attr:`event` (stop in order); a second one sets :attr:`hurry`
    (do not wait for the children's graceful stop: kill them).
    """

    _NAMES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.hurry = threading.Event()
        self.received: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        for sig in self._NAMES:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            self.hurry.set()
        self.received = signum
        self.event.set()

    def sleep(self, seconds: float) -> None:
        """Sleep, or raise :class:`Stopping` at once when a signal arrives."""
        if self.event.wait(seconds):
            raise Stopping()


def _wait_until(
    target: Child,
    probe: Callable[[], bool],
    children: Sequence[Child],
    signals: Signals,
    timeout_s: float,
) -> None:
    """Poll ``probe`` until true; raise :class:`StackError` if a child exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        for child in children:
            code = child.exited()
            if code is not None:
                raise StackError(
                    f"{child.name} exited with code {code} before it was ready; "
                    f"its log ({child.log_path}) ends with:\n{child.log_tail()}"
                )
        if probe():
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"{target.name} did not become ready within {timeout_s:g} s; "
                f"its log ({target.log_path}) ends with:\n{target.log_tail()}"
            )
        signals.sleep(_POLL_S)


def _central_ready(url: str) -> Callable[[], bool]:
    from modelreg.central.client import CentralClient
    from modelreg.errors import RegistryError

    client = CentralClient(url, timeout=2.0)

    def probe() -> bool:
        try:
            health = client.health()
        except RegistryError:
            return False
        return isinstance(health, dict) and health.get("status") == "ok"

    return probe


def _sidecar_ready(socket: Path) -> Callable[[], bool]:
    from modelreg.errors import RegistryError
    from modelreg.sidecar.client import Client

    def probe() -> bool:
        if not socket.exists():
            return False
        try:
            with Client(socket, timeout_s=2.0, connect_deadline_s=0) as client:
                return bool(client.status().get("ready"))
        except (RegistryError, OSError):
            return False

    return probe


def check_listen_free(listen: str) -> None:
    """Raise :class:`StackError` if something already listens on ``listen`` (host:port).

    Checked before central starts, so that the readiness probe cannot mistake another central
    on that port for ours. SO_REUSEADDR as aiohttp uses it: only a listening socket conflicts.
    """
    host, _, port = listen.rpartition(":")
    try:
        infos = socket.getaddrinfo(host or "127.0.0.1", int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot listen on {listen}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise StackError(
                f"{listen} is already in use ({exc.strerror}): another central or program "
                "listens there; stop it or pick another address with --listen"
            ) from None


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when under it (shorter to paste)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_steps(layout: Layout, demo_model: str | None, default_layout: bool) -> list[str]:
    """The lines printed once the stack is up: the token file, the env, three commands."""
    lines = [
        f"central  {layout.central_url}",
        f"sidecar  {_relative(layout.socket)}",
        f"admin token: {_relative(layout.admin_token_file)} (mode 0600; reg reads it by default)",
        f"logs: {_relative(layout.log_dir)}/",
        "",
    ]
    if not default_layout:
        lines += [
            "In another terminal, first:",
            f"  export REG_CENTRAL_URL={layout.central_url} "
            f"REG_DATA_DIR={layout.data_dir} REG_SOCKET={layout.socket}",
        ]
    lines.append("Try next (in another terminal):")
    if demo_model:
        lines += [
            f"  reg resolve {demo_model}@production",
            f"  reg history {demo_model} production",
            "  reg status",
        ]
    else:
        lines += [
            "  reg models create mymodel",
            "  reg push mymodel --artifact ./model.bin",
            "  reg status",
        ]
    lines.append("Ctrl-C stops central and the sidecar; the data stays for the next reg up.")
    return lines


def run_stack(
    layout: Layout,
    *,
    demo: bool,
    timeout_s: float,
    say: Callable[[str], None],
    default_layout: bool,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Bring the stack up, run until a signal or a child dies, stop it; return the exit code."""
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(layout.data_dir)
    _become_subreaper()
    central = Child(
        "central", layout.central_argv(), layout.log_dir / "central.log", CENTRAL_STOP_TIMEOUT_S
    )
    sidecar = Child(
        "sidecar", layout.sidecar_argv(), layout.log_dir / "sidecar.log", SIDECAR_STOP_TIMEOUT_S
    )
    exit_code = 0
    with Signals() as signals:
        try:
            check_listen_free(layout.listen)
            # Both at once: the sidecar needs only the replica (it answers not_ready until the
            # first one exists), so it starts while central restores and opens.
            central.start()
            say(f"starting central (pid {central.pid}) on {layout.central_url} ...")
            sidecar.start()
            say(f"starting sidecar (pid {sidecar.pid}) on {_relative(layout.socket)} ...")
            children = (central, sidecar)
            _wait_until(central, _central_ready(layout.central_url), children, signals, timeout_s)
            _wait_until(sidecar, _sidecar_ready(layout.socket), children, signals, timeout_s)
            demo_model = None
            if demo:
                from modelreg.cli.up_demo import run_demo

                demo_model = run_demo(layout, say)
            say("")
            for line in next_steps(layout, demo_model, default_layout):
                say(line)
            while True:
                for child in (central, sidecar):
                    code = child.exited()
                    if code is not None:
                        raise StackError(
                            f"{child.name} (pid {child.pid}) exited with code {code}; "
                            f"its log ({child.log_path}) ends with:\n{child.log_tail()}"
                        )
                signals.sleep(0.5)
        except Stopping:
            name = signal.Signals(signals.received or signal.SIGTERM).name
            say(f"\n{name}: stopping ...")
        except StackError as exc:
            (warn or say)(f"error: {exc}")
            exit_code = EXIT_UNAVAILABLE
        finally:
            if any(child.exited() is None for child in (sidecar, central) if child.proc):
                say("(Ctrl-C again to kill them at once)")
            for child in (sidecar, central):
                if child.proc is not None:
                    code = child.stop(signals.hurry)
                    say(f"stopped {child.name} (pid {child.pid}, exit code {code})")
            started = {child.pid for child in (sidecar, central) if child.pid is not None}
            for pid in stop_adopted(started, signals.hurry):
                say(f"stopped pid {pid}, left behind by a child that died")
            lock.close()
    if exit_code == 0:
        say(f"stopped; the data stays in {_relative(layout.data_dir)}")
    return exit_code


def _default_listen(central_url: str) -> str:
    """``host:port`` to serve on, taken from the global ``--central`` URL."""
    parts = urlsplit(central_url)
    if parts.scheme != "http" or not parts.hostname:
        raise click.BadParameter(
            f"reg up serves plain http on this machine; got --central {central_url}",
            param_hint="--central",
        )
    return f"{parts.hostname}:{parts.port or 80}"


def register(root: click.Group) -> None:
    """Add ``reg up`` to the root group."""

    @root.command("up")
    @click.option(
        "--data-dir",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Data directory of central and the sidecar [default: the global --data-dir, .reg].",
    )
    @click.option(
        "--listen",
        default=None,
        help="host:port for central [default: taken from --central, 127.0.0.1:8080].",
    )
    @click.option("--demo", is_flag=True, help="Register an example model, approve it, promote it.")
    @click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=1),
        default=DEFAULT_READY_TIMEOUT_S,
        show_default=True,
        help="Seconds to wait for each part to become ready.",
    )
    @pass_context
    def up(
        ctx: Context, data_dir: Path | None, listen: str | None, demo: bool, timeout_s: float
    ) -> None:
        """Run central and a sidecar on this machine until Ctrl-C (data in .reg).

        Central keeps its data in DATA_DIR with a file:// replica under it; the sidecar follows
        that replica and answers on DATA_DIR/sidecar.sock. Ctrl-C stops both and keeps the
        data: run it again to resume. Only one reg up per data directory.

        \b
        Example:
            reg up --demo
            reg up --data-dir /tmp/reg --listen 127.0.0.1:9000
        """
        chosen = (data_dir or ctx.data_dir).resolve()
        listen = listen or _default_listen(ctx.central_url)
        default_layout = (
            chosen == Path(".reg").resolve()
            and f"http://{listen}" == ctx.central_url
            and ctx.socket.resolve() == chosen / "sidecar.sock"
        )
        layout = Layout(data_dir=chosen, listen=listen)
        try:
            code = run_stack(
                layout,
                demo=demo,
                timeout_s=timeout_s,
                say=click.echo,
                warn=lambda line: click.echo(line, err=True),
                default_layout=default_layout,
            )
        except AlreadyRunning as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_CONFLICT)
        except OSError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(code)
