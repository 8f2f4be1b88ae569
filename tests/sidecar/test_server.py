"""The socket server's per-connection code, in process: the fast paths answer as the full one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from modelreg.sidecar.index import load
from modelreg.sidecar.metrics import Metrics
from modelreg.sidecar.protocol import encode_frame
from modelreg.sidecar.server import SocketServer, _Connection
from modelreg.sidecar.state import Node
from tests.sidecar.conftest import sample_registry
from tests.sidecar.registry_db import RegistryDB

RESOLVE = encode_frame({"op": "resolve", "model": "fraud", "ref": "production"})


class _Transport:
    """Collects what the connection writes."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def answers(self) -> list[dict[str, Any]]:
        out = []
        unpacker = msgpack.Unpacker(raw=False)
        pos = 0
        while pos < len(self.written):
            size = int.from_bytes(self.written[pos : pos + 4], "big")
            unpacker.feed(bytes(self.written[pos + 4 : pos + 4 + size]))
            out.append(unpacker.unpack())
            pos += 4 + size
        return out


@pytest.fixture
def db(tmp_path: Path) -> Iterator[RegistryDB]:
    registry = sample_registry(tmp_path / "registry.db")
    yield registry
    registry.close()


def connect(db: RegistryDB) -> tuple[Node, SocketServer, _Transport, _Connection]:
    node = Node(Metrics(), 30.0)
    node.swap(load(db.path))
    server = SocketServer(node, node.metrics, db.path.with_name("unused.sock"))
    transport = _Transport()
    conn = _Connection(server)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return node, server, transport, conn


def without_age(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "age_ms"}


class TestKnownFrames:
    def test_repeated_frame_answers_as_the_first(self, db: RegistryDB) -> None:
        """A frame answered before is answered again with the same record, id included."""
        _, server, transport, conn = connect(db)
        with_id = encode_frame({"op": "resolve", "model": "fraud", "ref": "1", "id": 7})
        for _ in range(3):
            conn.data_received(RESOLVE)
            conn.data_received(with_id)
        assert {RESOLVE, with_id} == set(server.known_frames)
        answers = [without_age(a) for a in transport.answers()]
        assert [answers[0], answers[1]] * 3 == answers
        assert (1, None, 1, 7) == (
            answers[0]["result"]["version"],
            answers[0].get("id"),
            answers[1]["result"]["version"],
            answers[1]["id"],
        )

    def test_known_frame_sees_a_new_index(self, db: RegistryDB) -> None:
        """After a swap, a known frame answers from the new index."""
        node, _, transport, conn = connect(db)
        conn.data_received(RESOLVE)
        conn.data_received(RESOLVE)
        db.set_alias("fraud", "production", 2)
        node.swap(load(db.path, node.index))
        conn.data_received(RESOLVE)
        assert [1, 1, 2] == [a["result"]["version"] for a in transport.answers()]

    def test_frame_split_across_reads_is_not_taken_for_a_known_one(self, db: RegistryDB) -> None:
        """Bytes completing a buffered frame are never looked up as a frame of their own."""
        _, server, transport, conn = connect(db)
        conn.data_received(RESOLVE)
        conn.data_received(RESOLVE[:3])
        conn.data_received(RESOLVE[3:] + RESOLVE)
        assert [1, 1, 1] == [a["result"]["version"] for a in transport.answers()]
        assert {RESOLVE} == set(server.known_frames)

    async def test_known_frame_waits_behind_a_waiting_request(self, db: RegistryDB) -> None:
        """Behind a request waiting for a revision, a known frame's answer keeps its place."""
        node, _, transport, conn = connect(db)
        conn.data_received(RESOLVE)
        conn.data_received(RESOLVE)
        assert node.index is not None
        waiting = {**msgpack.unpackb(RESOLVE[4:]), "id": "w", "wait_ms": 5000}
        conn.data_received(encode_frame({**waiting, "min_revision": node.index.revision + 1}))
        conn.data_received(RESOLVE)
        assert 2 == len(transport.answers())
        revision = db.set_alias("fraud", "canary", 1)
        node.swap(load(db.path, node.index))
        await asyncio.sleep(0)
        answers = transport.answers()
        assert ["w", None] == [a.get("id") for a in answers[2:]]
        assert revision == answers[2]["revision"]
