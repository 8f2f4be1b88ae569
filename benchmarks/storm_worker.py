"""One client process of the deploy storm (run by :mod:`benchmarks.bench_sidecar_storm`).

It opens ``--connections`` fresh connections at once, each sending ``--resolves`` sequential
resolves and checking every answer, then prints one JSON line of results. The same code drives
the sidecar (msgpack frames on a Unix socket) and central (HTTP/1.1 keep-alive on TCP), with
the same minimal asyncio streams on uvloop, so the two are compared like for like.

Protocol with the parent: print ``ready`` once set up, wait for a line on stdin (the start
signal, so every process starts together), run, print the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import random
import struct
import sys
import time
from typing import Any

import msgpack
import uvloop

from modelreg.sidecar.protocol import encode_frame

_HEADER = struct.Struct(">I")
#: How long a refused/busy connect is retried (as the client library does), seconds.
_CONNECT_DEADLINE_S = 10.0
_RETRY_ERRNOS = {errno.EAGAIN, errno.ECONNREFUSED, errno.ENOENT}


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.connect_retries = 0
        self.latencies: list[float] = []
        self.error_samples: list[str] = []

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


async def _connect(args: argparse.Namespace, stats: Stats) -> Any:
    deadline = time.monotonic() + _CONNECT_DEADLINE_S
    delay = 0.005
    while True:
        try:
            if args.socket:
                return await asyncio.open_unix_connection(args.socket)
            return await asyncio.open_connection(args.host, args.port)
        except OSError as exc:
            if exc.errno not in _RETRY_ERRNOS or time.monotonic() > deadline:
                raise
            stats.connect_retries += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.2)


class _SidecarConnection(asyncio.Protocol):
    """One storm connection: ``resolves`` sequential requests, each answer checked byte-exact.

    A raw Protocol rather than streams: the client processes share the machine with the
    server, so every microsecond they spend is one the server does not get.
    """

    def __init__(self, plan: list[tuple[bytes, bytes]], stats: Stats, done: asyncio.Future[None]):
        self.plan = plan
        self.stats = stats
        self.done = done
        self.buf = b""
        self.step = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.plan[0][0])  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            end = 4 + _HEADER.unpack_from(self.buf)[0]
            if len(self.buf) < end:
                return
            body, self.buf = self.buf[4:end], self.buf[end:]
            prefix = self.plan[self.step][1]
            # Everything but the trailing age_ms value must equal the expected answer.
            if body.startswith(prefix) and len(body) - len(prefix) <= 9:
                self.stats.ok += 1
            else:
                self.stats.error(f"answer: {msgpack.unpackb(body)!r:.200}")
            self.step += 1
            assert self.transport is not None
            if self.step == len(self.plan):
                self.transport.close()
                return
            self.transport.write(self.plan[self.step][0])

    def connection_lost(self, exc: Exception | None) -> None:
        if self.step < len(self.plan):
            self.stats.error(f"closed after {self.step} answers: {exc!r}")
        if not self.done.done():
            self.done.set_result(None)


async def _sidecar_client(
    args: argparse.Namespace, frames: list[tuple[bytes, bytes]], stats: Stats
) -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    done: asyncio.Future[None] = loop.create_future()
    plan = random.sample(frames, args.resolves)
    deadline = started + _CONNECT_DEADLINE_S
    delay = 0.005
    while True:
        try:
            await loop.create_unix_connection(
                lambda: _SidecarConnection(plan, stats, done), args.socket
            )
            break
        except OSError as exc:
            if exc.errno not in _RETRY_ERRNOS or time.monotonic() > deadline:
                stats.error(f"connect: {exc}")
                return
            stats.connect_retries += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.2)
    await done
    stats.latencies.append(time.monotonic() - started)


def _expected_prefixes(socket_path: str, targets: list[list[Any]]) -> list[tuple[bytes, bytes]]:
    """(request frame, expected answer minus its age) per target, asked once before the storm.

    Raises RuntimeError when an answer is not the expected version.
    """
    import socket

    out = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        for model, ref, version in targets:
            frame = encode_frame({"op": "resolve", "model": model, "ref": ref})
            sock.sendall(frame)
            data = b""
            while len(data) < 4 or len(data) < 4 + _HEADER.unpack_from(data)[0]:
                data += sock.recv(65536)
            body = data[4:]
            answer = msgpack.unpackb(body)
            if not answer.get("ok") or answer["result"]["version"] != version:
                raise RuntimeError(f"{model}@{ref}: expected v{version}, got {answer!r:.200}")
            age = msgpack.packb(answer["age_ms"])
            if not body.endswith(age):
                raise RuntimeError("age_ms is not the last value of the answer map")
            out.append((frame, body[: -len(age)]))
    return out


async def _http_client(
    args: argparse.Namespace, requests: list[tuple[bytes, int]], stats: Stats
) -> None:
    started = time.monotonic()
    try:
        reader, writer = await _connect(args, stats)
    except OSError as exc:
        stats.error(f"connect: {exc}")
        return
    try:
        for request, version in random.sample(requests, args.resolves):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length))
            if status == 200 and body["version"]["version"] == version:
                stats.ok += 1
            else:
                stats.error(f"HTTP {status}: {body!r:.200}")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        stats.error(f"io: {exc!r}")
    finally:
        writer.close()
    stats.latencies.append(time.monotonic() - started)


async def _storm(args: argparse.Namespace) -> dict[str, Any]:
    targets: list[list[Any]] = json.loads(args.targets)
    stats = Stats()
    if args.socket:
        frames = _expected_prefixes(args.socket, targets)

        def one() -> Any:
            return _sidecar_client(args, frames, stats)
    else:
        requests = [
            (
                (
                    f"GET /v1/resolve/{model}/{ref} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {args.token}\r\n\r\n"
                ).encode(),
                version,
            )
            for model, ref, version in targets
        ]

        def one() -> Any:
            return _http_client(args, requests, stats)

    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.connections)))
    finished = time.monotonic()
    return {
        "started": started,
        "finished": finished,
        "ok": stats.ok,
        "errors": stats.errors,
        "connect_retries": stats.connect_retries,
        "max_client_s": max(stats.latencies, default=0.0),
        "latencies": stats.latencies,
        "error_samples": stats.error_samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--resolves", type=int, required=True)
    parser.add_argument("--targets", required=True, help="JSON [[model, ref, version], ...]")
    args = parser.parse_args()
    result = uvloop.run(_storm(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
