"""Real processes for integration tests: central (``reg central serve``) and moto_server.

Every process started here is stopped by PID (SIGTERM, wait 5 s, SIGKILL) by whoever started it;
the fixtures in ``tests/conftest.py`` do that for you.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BIN_DIR",
    "CentralProc",
    "MotoProc",
    "free_port",
    "get_json",
    "read_lines",
    "start_central",
    "start_moto",
    "stop_process",
    "wait_for",
]

#: The venv's bin directory (reg, moto_server, litestream live there).
BIN_DIR = Path(sys.executable).parent
START_TIMEOUT_S = 30.0
#: Seconds central gets to stop gracefully: litestream's last sync to S3 can take ~5 s.
CENTRAL_STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = condition()
        except Exception as exc:  # the condition may fail until it holds
            last_exc = exc
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def read_lines(stream: Any, count: int, timeout: float = 30.0) -> list[bytes]:
    """The first ``count`` lines a child writes to the pipe ``stream`` (read unbuffered, so
    nothing waits in a buffer ``select`` cannot see). Raises AssertionError after
    ``timeout`` seconds or at the end of the stream."""
    import os
    import select

    fd, buffer, newline = stream.fileno(), b"", b"\n"
    deadline = time.monotonic() + timeout
    while buffer.count(newline) < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        got = buffer.count(newline)
        assert ready, f"{got} of {count} lines from the child in {timeout} s"
        chunk = os.read(fd, 65536)
        assert chunk, f"the child closed its output after {got} lines"
        buffer += chunk
    return buffer.split(b"\n")[:count]


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0
) -> int:
    """Send ``sig``, wait ``timeout`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


def get_json(url: str, token: str | None = None, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON body (raises urllib errors)."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class CentralProc:
    """A running ``reg central serve``; ``.url``, ``.pid``, ``.admin_token``, ``.log_path``."""

    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, data_dir: Path, log_path: Path
    ) -> None:
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def healthz(self) -> Any:
        return get_json(self.url + "/healthz")

    def log(self) -> str:
        return _log_tail(self.log_path, 100_000)

    def stop(self, timeout: float = CENTRAL_STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful: flushes replication), wait, then SIGKILL; the exit code."""
        return stop_process(self.proc, timeout=timeout)

    def kill(self) -> int:
        """SIGKILL at once (a crash); the exit code."""
        return stop_process(self.proc, signal.SIGKILL)


def start_central(
    data_dir: Path,
    replica_url: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    sync_interval: float = 0.2,
    heartbeat_interval: float = 0.5,
    port: int | None = None,
) -> CentralProc:
    """Start ``reg central serve`` on a loopback port (``port``, else a free one) and wait for
    ``/healthz``.

    ``replica_url`` None keeps the default replica (``file://<data_dir>/replica``); pass
    ``"none"`` to disable replication. ``env`` is added to this process's environment.
    Raises RuntimeError (with the log tail) when central exits or is not healthy in time.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(BIN_DIR / "reg"),
        "central",
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--sync-interval",
        str(sync_interval),
        "--heartbeat-interval",
        str(heartbeat_interval),
    ]
    if replica_url is not None:
        args += ["--replica", replica_url]
    args += list(extra_args)
    fd, log_name = tempfile.mkstemp(prefix=f"central-{port}-", suffix=".log")
    log_path = Path(log_name)
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    central = CentralProc(proc, url, Path(data_dir), log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"central exited with {proc.returncode} before it was healthy:\n"
                + _log_tail(log_path)
            )
        try:
            if central.healthz().get("status") == "ok":
                return central
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(
                f"central not healthy after {START_TIMEOUT_S} s:\n" + _log_tail(log_path)
            )
        time.sleep(0.05)


class MotoProc:
    """A running ``moto_server`` on 127.0.0.1 (an S3 endpoint): ``.endpoint``, ``.port``.

    moto keeps its objects in memory, so a plain restart would lose every object (that is a
    data loss, not an outage). The server therefore records every request to a file, and
    :meth:`start_again` replays that recording: objects survive a stop/start like on a real
    object store.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix=f"moto-{port}-", suffix=".jsonl")
        os.close(fd)
        self.recording = Path(name)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start_again(self) -> None:
        """(Re)start the server on the same port and wait until it answers.

        moto keeps its state in memory: after a restart every bucket is gone, so callers
        recreate theirs (see ``create_bucket``).
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        replay = self.recording.stat().st_size > 0
        env = {
            **os.environ,
            "MOTO_ENABLE_RECORDING": "true",
            "MOTO_RECORDER_FILEPATH": str(self.recording),
        }
        self.proc = subprocess.Popen(
            [str(BIN_DIR / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False

        try:
            wait_for(ready, timeout=START_TIMEOUT_S, what="moto_server")
            if replay:
                self._moto_api("/moto-api/recorder/replay-recording")
        except BaseException:
            self.stop()
            raise

    def _moto_api(self, path: str) -> None:
        request = urllib.request.Request(self.endpoint + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60):
            pass

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` with a plain path-style PUT (moto accepts any credentials)."""
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        """SIGTERM, wait 5 s, SIGKILL (the recording stays for :meth:`start_again`)."""
        if self.proc is not None:
            stop_process(self.proc)

    def close(self) -> None:
        """Stop the server and delete its recording."""
        self.stop()
        self.recording.unlink(missing_ok=True)


def start_moto(port: int | None = None) -> MotoProc:
    """Start ``moto_server -H 127.0.0.1 -p PORT`` and wait until it answers."""
    moto = MotoProc(port or free_port())
    moto.start_again()
    return moto
