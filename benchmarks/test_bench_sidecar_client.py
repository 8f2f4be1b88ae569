"""pytest-benchmark suite of the sidecar client's hot path (not part of ``make test``).

Run: ``.venv/bin/pytest benchmarks/test_bench_sidecar_client.py --benchmark-enable``
(``testpaths`` is ``tests``, so the suite never runs this file; ``--benchmark-disable`` is the
default in pyproject, hence the flag).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from benchmarks.harness import install_local_copy, short_tmpdir, start_echo, start_sidecar
from benchmarks.registry_db import build_registry
from modelreg.sidecar.client import Client, ResolvedModel, _AnswerCache
from modelreg.sidecar.index import load
from modelreg.sidecar.protocol import encode_frame


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Path, Path, Path]]:
    """(sidecar socket, echo socket, registry.db of 1,000 versions)."""
    with short_tmpdir() as tmp:
        db = build_registry(tmp / "registry.db", models=100, versions_per_model=10)
        install_local_copy(db.path, tmp / "sidecar")
        echo, echo_path = start_echo(tmp)
        try:
            sidecar, socket_path = start_sidecar(tmp)
            try:
                yield socket_path, echo_path, db.path
            finally:
                sidecar.stop()
        finally:
            echo.stop()


def test_client_resolve(benchmark: Any, node: tuple[Path, Path, Path]) -> None:
    """One Client.resolve round trip on a reused connection."""
    with Client(node[0]) as client:
        result = benchmark(client.resolve, "model-00042", "production")
    assert result.version == 5


def test_echo_roundtrip(benchmark: Any, node: tuple[Path, Path, Path]) -> None:
    """The baseline: one resolve-sized frame through the bare echo server."""
    import socket

    frame = encode_frame({"op": "resolve", "model": "model-00042", "ref": "production"})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(node[1]))

        def roundtrip() -> bytes:
            sock.sendall(frame)
            got = b""
            while len(got) < len(frame):
                got += sock.recv(65536)
            return got

        assert frame == benchmark(roundtrip)


def test_record_decoding(benchmark: Any, node: tuple[Path, Path, Path]) -> None:
    """msgpack decoding plus ResolvedModel construction of one answer (no I/O)."""
    with Client(node[0]) as client:
        raw = dict(client.resolve("model-00042", "production").raw)
    body = msgpack.packb({"ok": True, "result": raw, "revision": 1, "age_ms": 1})

    def decode() -> ResolvedModel:
        return ResolvedModel.from_answer(msgpack.unpackb(body))

    assert benchmark(decode).version == 5


def test_cached_record(benchmark: Any, node: tuple[Path, Path, Path]) -> None:
    """A repeated answer that differs only in age_ms: the client's cache hit (no I/O)."""
    with Client(node[0]) as client:
        raw = dict(client.resolve("model-00042", "production").raw)
    frame = encode_frame({"op": "resolve", "model": "model-00042", "ref": "production"})
    first = msgpack.packb({"ok": True, "result": raw, "revision": 1, "age_ms": 1})
    again = msgpack.packb({"ok": True, "result": raw, "revision": 1, "age_ms": 2})
    cache = _AnswerCache()
    cache.record(frame, first)
    assert benchmark(cache.record, frame, again).age_ms == 2


def test_index_load_1000_versions(benchmark: Any, node: tuple[Path, Path, Path]) -> None:
    """sidecar.index.load of a 1,000-version copy."""
    index = benchmark(load, node[2])
    assert index.versions == 1000
