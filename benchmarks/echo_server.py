"""The baseline: a bare Python Unix-socket echo server (uvloop, one asyncio Protocol).

It does the least a server on this machine can do per request (wake up, read, write back), so
the sidecar's resolve latency is reported as a ratio against it, measured in the same run.

Run: ``python -m benchmarks.echo_server /tmp/echo.sock`` (prints ``ready`` once listening).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import cast

import uvloop


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, do not check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(path: str) -> None:
    """Echo on ``path`` until SIGTERM/SIGINT."""
    if os.path.exists(path):
        os.unlink(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(_Echo, path, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    os.unlink(path)


def main() -> None:
    uvloop.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
