"""Sequential resolve latency: one client, one connection, the sidecar vs. a bare echo server.

Three series, interleaved in rounds so that drift on a shared machine hits them alike:

* ``echo``: a resolve-sized frame through :mod:`benchmarks.echo_server` (the floor: wake-up,
  read, write back, nothing else) with a minimal blocking client.
* ``sidecar raw``: the same minimal client sending a real resolve frame to the sidecar.
* ``sidecar Client``: :meth:`modelreg.sidecar.client.Client.resolve`, the library serving code uses
  (framing, decoding, the typed record).

Targets (docs/ARCHITECTURE.md): p50 of ``Client`` ≤ 1.5x the echo p50; p99 ≤ 250 µs.

Run: ``python -m benchmarks.bench_sidecar_latency [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import time
from pathlib import Path

from benchmarks.harness import (
    Row,
    install_local_copy,
    percentile,
    short_tmpdir,
    start_echo,
    start_sidecar,
)
from benchmarks.registry_db import build_registry
from modelreg.sidecar.client import Client
from modelreg.sidecar.protocol import encode_frame

__all__ = ["main", "run"]

_HEADER = struct.Struct(">I")


def _raw_roundtrip(sock: socket.socket, frame: bytes, buf: bytearray) -> None:
    """Send one frame and read one whole frame back (header + body)."""
    sock.sendall(frame)
    del buf[:]
    while True:
        buf += sock.recv(65536)
        if len(buf) >= 4 and len(buf) >= 4 + _HEADER.unpack_from(buf)[0]:
            return


def _time_raw(path: Path, frame: bytes, n: int) -> list[float]:
    buf = bytearray()
    out: list[float] = []
    clock = time.perf_counter_ns
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        for _ in range(min(200, n)):
            _raw_roundtrip(sock, frame, buf)
        for _ in range(n):
            started = clock()
            _raw_roundtrip(sock, frame, buf)
            out.append((clock() - started) / 1000)
    return out


def _time_client(path: Path, model: str, ref: str, n: int) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    with Client(path) as client:
        for _ in range(min(200, n)):
            client.resolve(model, ref)
        for _ in range(n):
            started = clock()
            client.resolve(model, ref)
            out.append((clock() - started) / 1000)
    return out


def run(requests: int = 20_000, rounds: int = 10, models: int = 100) -> list[Row]:
    """Measure the three series; ``requests`` per series in ``rounds`` interleaved rounds."""
    per_round = max(1, requests // rounds)
    series: dict[str, list[float]] = {"echo": [], "sidecar raw": [], "sidecar Client": []}
    with short_tmpdir() as tmp:
        db = build_registry(tmp / "registry.db", models=models, versions_per_model=10)
        install_local_copy(db.path, tmp / "sidecar")
        echo, echo_path = start_echo(tmp)
        try:
            sidecar, sidecar_path = start_sidecar(tmp)
            try:
                model = db.model_name(models // 2)
                frame = encode_frame({"op": "resolve", "model": model, "ref": "production"})
                with Client(sidecar_path) as client:
                    answer = client.resolve(model, "production")
                reply_size = len(encode_frame(dict(answer.raw)))
                # The echo gets a frame as large as a real answer, so both move the same bytes.
                echo_frame = _HEADER.pack(reply_size) + b"x" * reply_size
                for _ in range(rounds):
                    series["echo"] += _time_raw(echo_path, echo_frame, per_round)
                    series["sidecar raw"] += _time_raw(sidecar_path, frame, per_round)
                    series["sidecar Client"] += _time_client(
                        sidecar_path, model, "production", per_round
                    )
            finally:
                sidecar.stop()
        finally:
            echo.stop()
    echo_p50 = percentile(series["echo"], 50)
    rows = []
    for name, samples in series.items():
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        ratio = p50 / echo_p50
        is_client = name == "sidecar Client"
        rows.append(
            Row(
                name=f"sequential resolve, {name}",
                value=f"p50 {p50:.1f} µs, p99 {p99:.1f} µs",
                baseline=f"echo p50 {echo_p50:.1f} µs",
                ratio=f"{ratio:.2f}x",
                target="p50 ≤ 1.5x echo, p99 ≤ 250 µs" if is_client else "",
                met=(ratio <= 1.5 and p99 <= 250) if is_client else None,
                extra={"p50_us": p50, "p99_us": p99, "n": len(samples), "ratio": ratio},
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for row in run(args.requests, args.rounds):
        print(f"{row.name}: {row.value} ({row.ratio} of echo) {row.verdict()}")


if __name__ == "__main__":
    main()
