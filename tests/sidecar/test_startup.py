"""Start-up: the sockets exist at once and say not_ready until the local copy is served."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.errors import NotReady
from modelreg.sidecar.client import Client
from modelreg.sidecar.snapshot import SAVED_INDEX_NAME
from tests.sidecar.conftest import sample_registry, seed_copy
from tests.sidecar.helpers import (
    SidecarProc,
    short_dir,
    sidecar_refuses,
    start_sidecar,
    wait_answer,
)

pytestmark = pytest.mark.integration

RESOLVE = {"op": "resolve", "model": "fraud", "ref": "production"}


def not_ready(answer: Any) -> bool:
    return answer.get("ok") is False and answer["error"]["code"] == "not_ready"


Loading = tuple[SidecarProc, Callable[[], None]]


@pytest.fixture
def loading(tmp_path: Path) -> Iterator[Loading]:
    """A sidecar held in its start-up load (it answers not_ready), and a function that lets
    the load go on: the load starts by reading the saved index, and a FIFO there blocks it."""
    db = sample_registry(tmp_path / "registry.db")
    sock_dir = short_dir()
    data_dir = sock_dir / "data"
    seed_copy(db, data_dir)
    db.close()
    saved = data_dir / SAVED_INDEX_NAME
    os.mkfifo(saved)
    sidecar = start_sidecar((tmp_path / "no-replica").as_uri(), sock_dir=sock_dir, wait=False)

    def release() -> None:
        with open(saved, "wb") as writer:  # not a saved index: a full load follows
            writer.write(b"not msgpack")

    try:
        wait_answer(sidecar, not_ready, RESOLVE)
        yield sidecar, release
    finally:
        sidecar.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


class TestFirstLoad:
    def test_answers_not_ready_while_the_local_copy_loads(self, loading: Loading) -> None:
        """While the local copy loads, resolve answers not_ready saying so; then the copy."""
        sidecar, release = loading
        waiting = sidecar.ask(RESOLVE)
        assert not_ready(waiting), waiting
        assert "loading the local copy" in waiting["error"]["message"]
        assert sidecar.http_socket.exists()
        release()
        answer = wait_answer(sidecar, lambda a: a.get("ok") is True, RESOLVE)
        assert 1 == answer["result"]["version"]
        assert sidecar.status()["ready"] is True

    def test_sigterm_during_the_load_exits_without_starting_more(self, loading: Loading) -> None:
        """SIGTERM while the local copy loads: it finishes the load, then exits 0, sockets gone."""
        sidecar, release = loading
        sidecar.proc.send_signal(signal.SIGTERM)
        release()
        assert 0 == sidecar.proc.wait(30)
        assert "sidecar serving on" not in sidecar.log()
        assert not sidecar.socket.exists()
        assert not sidecar.http_socket.exists()

    def test_without_a_copy_answers_not_ready_at_once(self, tmp_path: Path) -> None:
        """With no local copy and an unreachable replica, the socket answers not_ready."""
        sock_dir = short_dir()
        sidecar = start_sidecar((tmp_path / "no-replica").as_uri(), sock_dir=sock_dir)
        try:
            answer = sidecar.ask(RESOLVE)
            assert not_ready(answer), answer
            assert "no local copy yet" in answer["error"]["message"]
        finally:
            sidecar.stop()
            shutil.rmtree(sock_dir, ignore_errors=True)


class TestClientWaitsForReady:
    def test_resolve_waits_through_the_load(self, loading: Loading) -> None:
        """A Client.resolve sent while the copy loads is answered once it is served."""
        sidecar, release = loading
        results: list[Any] = []
        with Client(sidecar.socket, connect_deadline_s=60) as client:
            caller = threading.Thread(
                target=lambda: results.append(client.resolve("fraud", "production"))
            )
            caller.start()
            release()
            caller.join(60)
        assert [1] == [model.version for model in results]

    def test_resolve_raises_not_ready_after_its_deadline(self, tmp_path: Path) -> None:
        """With no copy at all, Client.resolve gives up with NotReady after its deadline."""
        sock_dir = short_dir()
        sidecar = start_sidecar((tmp_path / "no-replica").as_uri(), sock_dir=sock_dir)
        try:
            with (
                Client(sidecar.socket, connect_deadline_s=0.3) as client,
                pytest.raises(NotReady, match="no local copy yet"),
            ):
                client.resolve("fraud", "production")
        finally:
            sidecar.stop()
            shutil.rmtree(sock_dir, ignore_errors=True)


class TestLitestreamMissing:
    def test_exits_1_with_a_message_and_removes_its_sockets(self, tmp_path: Path) -> None:
        """Without litestream it serves its local copy, then exits 1 saying so, sockets gone."""
        db = sample_registry(tmp_path / "registry.db")
        sock_dir = short_dir()
        seed_copy(db, sock_dir / "data")
        db.close()
        try:
            output = sidecar_refuses(
                (tmp_path / "no-replica").as_uri(),
                sock_dir / "s.sock",
                sock_dir / "data",
                extra_args=["--litestream-bin", str(tmp_path / "no-litestream")],
                http=sock_dir / "h.sock",
            )
            assert "litestream" in output.lower()
            assert [] == sorted(p.name for p in sock_dir.glob("*.sock"))
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
