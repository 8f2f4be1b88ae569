"""Run litestream as a child and stop it when central dies: ``python litestream_guard.py BIN ARGS``.

Central starts litestream through this small guard so that a crashed central (even SIGKILL)
never leaves an orphaned litestream replicating a data directory nobody owns any more: the
guard's stdin is a pipe from central, and end-of-file on it (central is gone) makes the guard
send SIGTERM to litestream, which then syncs once more and exits. PR_SET_PDEATHSIG would do the
same in-kernel but is not honoured by every sandboxed kernel (it was not on our CI machine).

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


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: litestream_guard.py LITESTREAM [ARGS...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    print(f'level=INFO msg="guard started litestream" litestream_pid={child.pid}', flush=True)

    def stop(signum: int | None = None, frame: FrameType | None = None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_parent() -> None:
        while os.read(0, 4096):  # b"" is end-of-file: central closed the pipe or died
            pass
        stop()

    threading.Thread(target=watch_parent, daemon=True).start()
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(exit_code)  # not sys.exit: the stdin watcher thread may still be blocked in read
