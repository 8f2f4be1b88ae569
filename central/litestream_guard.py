"""Run litestream as a child and stop it when central dies: ``python litestream_guard.py BIN ARGS``.

Central starts litestream through this small guard so that a crashed central (even SIGKILL)
never leaves an orphaned litestream replicating a data directory nobody owns any more: the
guard's stdin is a pipe from central, and end-of-file on it (central is gone) makes the guard
send SIGTERM to litestream, which then syncs once more and exits. PR_SET_PDEATHSIG would do the
same in-kernel but is not honoured by every sandboxed kernel (it was not on our CI machine).

The guard relays litestream's output line by line instead of handing it central's pipe: when
central dies that pipe breaks, and a Go program writing to a broken stdout is killed by SIGPIPE
before it can ship anything. A litestream that had not finished starting (it waits about a
second before its first sync) exits on SIGTERM without shipping, so after an orphaned
``replicate`` exits the guard runs ``litestream replicate -once`` with the same config: every
transaction central committed before it died reaches the replica.

SIGTERM/SIGINT to the guard are forwarded to litestream. The guard exits with litestream's exit
code (128 + signal number when a signal ended it). Its first output line names litestream's pid.
Run as a script: it imports nothing from modelreg, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import IO


class _Relay:
    """Copies lines to our stdout until that breaks (central is gone), then drops them."""

    def __init__(self) -> None:
        self.broken = False
        self.lock = threading.Lock()

    def write(self, line: bytes) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
            except OSError:
                self.broken = True

    def pump(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.write(line)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: litestream_guard.py LITESTREAM [ARGS...]", file=sys.stderr)
        return 2
    relay = _Relay()
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert child.stdout is not None
    relay.write(f'level=INFO msg="guard started litestream" litestream_pid={child.pid}\n'.encode())
    pump = threading.Thread(target=relay.pump, args=(child.stdout,), daemon=True)
    pump.start()

    def stop(signum: int | None = None, frame: FrameType | None = None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    orphaned = threading.Event()

    def watch_parent() -> None:
        while os.read(0, 4096):  # b"" is end-of-file: central closed the pipe or died
            pass
        orphaned.set()
        stop()

    threading.Thread(target=watch_parent, daemon=True).start()
    code = child.wait()
    pump.join(5)
    if orphaned.is_set() and argv[1:2] == ["replicate"]:
        relay.write(b'level=INFO msg="central is gone: final sync"\n')
        once = subprocess.run(
            [argv[0], "replicate", "-once", *argv[2:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        code = once.returncode
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    os._exit(exit_code)  # not sys.exit: the stdin watcher thread may still be blocked in read
