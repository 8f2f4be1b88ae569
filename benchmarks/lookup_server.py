"""The storm's baseline: a minimal uvloop lookup server over the same data as the sidecar.

The storm's reference (docs/ARCHITECTURE.md, "Targets") is "a minimal uvloop lookup server". This is
one: an asyncio ``Protocol`` per connection on a Unix socket, frames split by their length prefix,
the request decoded with msgpack, one dict lookup of a pre-encoded answer (the very bytes the
sidecar answers, built with :func:`modelreg.sidecar.index.load` from the same local copy), the
``age_ms`` value appended, one ``transport.write`` per batch. No validation, limits, metrics,
watches or timeouts: what is left is the least any lookup server on this machine pays per connection
and per request, so the sidecar's storm is reported as a ratio against it, in the same run.

Run: ``python -m benchmarks.lookup_server SOCKET REGISTRY_DB`` (prints ``ready`` once listening).
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
import time
from pathlib import Path
from typing import cast

import msgpack
import uvloop

from modelreg.sidecar.index import load

_LEN = struct.Struct(">I")


class _Lookup(asyncio.Protocol):
    def __init__(self, answers: dict[tuple[str, str], bytes], tail: bytes, beat: int) -> None:
        self.answers = answers
        self.tail = tail
        self.beat = beat
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, do not check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            end = pos + 4 + _LEN.unpack_from(buf, pos)[0]
            if end > len(buf):
                break
            request = msgpack.unpackb(buf[pos + 4 : end])
            pos = end
            body = (
                self.answers[(request["model"], request["ref"])]
                + self.tail
                + msgpack.packb(int(time.time() * 1000) - self.beat)
            )
            out.append(_LEN.pack(len(body) + 1) + b"\x84" + body)
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))


async def serve(path: str, db: Path) -> None:
    """Serve the resolve answers of ``db`` on ``path`` until SIGTERM/SIGINT."""
    index = load(db)
    beat = index.heartbeat_ms or 0
    if os.path.exists(path):
        os.unlink(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(
        lambda: _Lookup(index.resolve, index.tail, beat), path, backlog=8192
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    os.unlink(path)


def main() -> None:
    uvloop.run(serve(sys.argv[1], Path(sys.argv[2])))


if __name__ == "__main__":
    main()
