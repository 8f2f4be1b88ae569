"""A real ``reg sidecar run`` process for tests, and a raw socket client to talk to it.

The raw client speaks the framing by hand (not through ``modelreg.sidecar.client``) so that these
tests check the wire format itself.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelreg.sidecar.protocol import MAX_RESPONSE_BYTES, FrameDecoder, encode_frame
from tests.procs import BIN_DIR, stop_process, wait_for

__all__ = [
    "Conn",
    "SidecarProc",
    "http_get",
    "short_dir",
    "sidecar_refuses",
    "start_sidecar",
    "wait_answer",
]


def short_dir(prefix: str = "rs-") -> Path:
    """A fresh directory under the system temp dir (Unix socket paths must stay short)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))


class Conn:
    """One blocking connection to a sidecar socket: send frames, read answers."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
        except BaseException:
            self.sock.close()
            raise
        self.decoder = FrameDecoder(MAX_RESPONSE_BYTES)
        self._ready: list[Any] = []

    def send(self, request: Any) -> None:
        self.sock.sendall(encode_frame(request))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Any:
        """The next answer frame (raises ConnectionError when the server closed)."""
        while not self._ready:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionResetError("closed by the sidecar")
            self.decoder.feed(chunk)
            self._ready.extend(self.decoder)
        return self._ready.pop(0)

    def ask(self, request: Any) -> Any:
        self.send(request)
        return self.read()

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the connection (answers before that are skipped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ask(path: Path | str, request: Any, timeout: float = 10.0) -> Any:
    """One request on a fresh connection."""
    with Conn(path, timeout) as conn:
        return conn.ask(request)


def http_get(socket_path: Path | str, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET over a Unix socket with curl: ``(status, body)``."""
    out = subprocess.run(
        [
            shutil.which("curl") or "curl",
            "-s",
            "--max-time",
            str(timeout),
            "--unix-socket",
            str(socket_path),
            "-w",
            "\n%{http_code}",
            f"http://reg{path}",
        ],
        capture_output=True,
        check=True,
        timeout=timeout + 5,
    ).stdout.decode()
    body, _, status = out.rpartition("\n")
    return int(status), body


class SidecarProc:
    """A running ``reg sidecar run``: ``.socket``, ``.http_socket``, ``.data_dir``, ``.pid``."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        socket: Path,
        http_socket: Path,
        data_dir: Path,
        log: Path,
    ) -> None:
        self.proc = proc
        self.socket = socket
        self.http_socket = http_socket
        self.data_dir = data_dir
        self.log_path = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, request: Any) -> Any:
        return ask(self.socket, request)

    def status(self) -> dict[str, Any]:
        answer = self.ask({"op": "status"})
        result: dict[str, Any] = answer["result"]
        return result

    def resolve(self, model: str, ref: str | int, **extra: Any) -> Any:
        return self.ask({"op": "resolve", "model": model, "ref": ref, **extra})

    def healthz(self) -> tuple[int, Any]:
        status, body = http_get(self.http_socket, "/healthz")
        return status, json.loads(body)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, wait 5 s, SIGKILL; the exit code."""
        return stop_process(self.proc)


def start_sidecar(
    replica_url: str,
    data_dir: Path | None = None,
    *,
    follow_interval: float = 0.1,
    stale_after: float = 30.0,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    sock_dir: Path | None = None,
    socket_path: Path | None = None,
    wait: bool = True,
) -> SidecarProc:
    """Start ``reg sidecar run`` and wait until it has announced itself and answers ``ping``
    (``wait=False``: return at once after spawning it).

    Sockets go in ``sock_dir`` (default: a fresh short temp dir). ``env`` is added to this
    process's environment. Raises RuntimeError with the log when it exits or never answers.
    """
    sock_dir = sock_dir or short_dir()
    data_dir = data_dir or sock_dir / "data"
    sock = socket_path or sock_dir / "s.sock"
    http_sock = sock_dir / "h.sock"
    log_path = sock_dir / "sidecar.log"
    args = [
        str(BIN_DIR / "reg"),
        "sidecar",
        "run",
        "--replica",
        replica_url,
        "--data-dir",
        str(data_dir),
        "--socket",
        str(sock),
        "--http-socket",
        str(http_sock),
        "--follow-interval",
        str(follow_interval),
        "--stale-after",
        str(stale_after),
        *extra_args,
    ]
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    sidecar = SidecarProc(proc, sock, http_sock, data_dir, log_path)
    if not wait:
        return sidecar

    deadline = time.monotonic() + 30.0
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}:\n{sidecar.log()}")
        try:
            # both servers listen once the start-up line is printed
            if "sidecar serving on" in sidecar.log() and ask(sock, {"op": "ping"}, 2.0)["ok"]:
                return sidecar
        except OSError:
            pass
        if time.monotonic() > deadline:
            sidecar.stop()
            raise RuntimeError(f"sidecar not answering after 30 s:\n{sidecar.log()}")
        time.sleep(0.05)


def sidecar_refuses(
    replica_url: str,
    socket_path: Path,
    data_dir: Path,
    extra_args: Sequence[str] = (),
    http: Path | None = None,
) -> str:
    """Run ``reg sidecar run`` expecting it to exit 1 at once; return its output."""
    http = http or short_dir() / "h.sock"
    done = subprocess.run(
        [
            str(BIN_DIR / "reg"),
            "sidecar",
            "run",
            "--replica",
            replica_url,
            "--data-dir",
            str(data_dir),
            "--socket",
            str(socket_path),
            "--http-socket",
            str(http),
            *extra_args,
        ],
        capture_output=True,
        timeout=60,
    )
    assert 1 == done.returncode, done
    return (done.stdout + done.stderr).decode()


def wait_answer(sidecar: SidecarProc, predicate: Any, request: Any, timeout: float = 30.0) -> Any:
    """Poll ``request`` until ``predicate(answer)`` holds; return that answer."""
    seen: list[Any] = []

    def check() -> Any:
        answer = sidecar.ask(request)
        seen[:] = [answer]
        return answer if predicate(answer) else None

    try:
        return wait_for(check, timeout=timeout, what=f"an answer to {request}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {seen}\n{sidecar.log()}") from None


def now_ms() -> int:
    return int(time.time() * 1000)
