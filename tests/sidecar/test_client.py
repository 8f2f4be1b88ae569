"""The client library against a real ``reg sidecar run``: records, errors, retries, reuse."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.errors import (
    AliasNotFound,
    InvalidField,
    InvalidRequest,
    ModelNotFound,
    Unavailable,
    VersionNotFound,
)
from modelreg.sidecar.client import AsyncClient, Client, Lineage, ResolvedModel
from modelreg.sidecar.protocol import FrameDecoder, encode_frame
from tests.sidecar.conftest import sample_registry, seed_copy
from tests.sidecar.helpers import SidecarProc, http_get, short_dir, start_sidecar

pytestmark = pytest.mark.integration


def connections_accepted(sidecar: SidecarProc) -> int:
    """The sidecar's ``reg_sidecar_connections_total`` counter, from its /metrics."""
    status, body = http_get(sidecar.http_socket, "/metrics")
    assert 200 == status
    for line in body.splitlines():
        if line.startswith("reg_sidecar_connections_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no reg_sidecar_connections_total in /metrics")


def answer_pings(server: socket.socket, stop: threading.Event) -> None:
    """A stand-in server: accept every connection, answer each frame with ``pong``."""
    server.settimeout(0.05)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_pong, args=(conn,), daemon=True).start()


def _pong(conn: socket.socket) -> None:
    with conn:
        decoder = FrameDecoder()
        while chunk := conn.recv(65536):
            decoder.feed(chunk)
            for _ in decoder:
                conn.sendall(encode_frame({"ok": True, "result": "pong", "revision": 0}))


@pytest.fixture
def client(offline_sidecar: SidecarProc) -> Iterator[Client]:
    """A Client on the module's sidecar."""
    with Client(offline_sidecar.socket) as reg:
        yield reg


@pytest.fixture
def seeded_dir(tmp_path: Path) -> Iterator[Path]:
    """A short directory whose ``data`` subdirectory holds a seeded local copy."""
    sock_dir = short_dir()
    db = sample_registry(tmp_path / "registry.db")
    seed_copy(db, sock_dir / "data")
    db.close()
    try:
        yield sock_dir
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


class TestResolve:
    def test_alias_gives_a_typed_record(self, client: Client, offline_sidecar: SidecarProc) -> None:
        """model@alias answers a ResolvedModel with the version's fields and freshness."""
        resolved = client.resolve("fraud", "production")
        assert ResolvedModel is type(resolved)
        expected = ("fraud", 1, "production", "approved", "s3://b/fraud/1")
        actual = (
            resolved.model,
            resolved.version,
            resolved.ref,
            resolved.status,
            resolved.artifact_uri,
        )
        assert expected == actual
        assert ("production",) == resolved.aliases
        assert Lineage is type(resolved.lineage)
        assert offline_sidecar.status()["revision"] == resolved.revision
        assert resolved.raw["artifact"]["sha256"] == resolved.sha256
        assert 64 == len(resolved.sha256)

    def test_version_number_and_latest(self, client: Client) -> None:
        """A version number (int or str) and ``latest`` (highest non-archived) resolve."""
        assert 2 == client.resolve("fraud", 2).version
        assert "2" == client.resolve("fraud", "2").ref
        assert 2 == client.resolve("fraud", "latest").version
        assert 3 == client.resolve("fraud", 3).version

    def test_record_is_read_only(self, client: Client) -> None:
        """The record cannot be changed by the code holding it."""
        resolved = client.resolve("fraud", "production")
        with pytest.raises(dataclasses.FrozenInstanceError):
            resolved.version = 9  # type: ignore[misc]
        with pytest.raises(TypeError):
            resolved.tags["x"] = "y"  # type: ignore[index]

    def test_records_compare_and_hash(self, client: Client) -> None:
        """Two answers for the same version at the same revision are equal and hash alike."""
        first = client.resolve("fraud", "production")
        second = client.resolve("fraud", "production")
        # age_ms may differ between the two answers: compare everything else.
        second = dataclasses.replace(second, age_ms=first.age_ms)
        assert first == second
        assert 1 == len({first, second})

    def test_status_ping_get_list(self, client: Client) -> None:
        """status, ping, get and list answer through the same connection."""
        status = client.status()
        assert (True, 3) == (status["ready"], status["models"])
        assert "pong" == client.ping()
        assert {"canary": 2, "production": 1} == client.get("fraud")["aliases"]
        names = [item["name"] for item in client.list()["items"]]
        assert ["churn", "empty", "fraud"] == names

    def test_one_connection_is_reused(self, client: Client, offline_sidecar: SidecarProc) -> None:
        """Twenty calls on one Client open one connection."""
        client.ping()
        before = connections_accepted(offline_sidecar)
        for _ in range(20):
            client.resolve("fraud", "production")
        # /metrics itself is served on the HTTP socket, not counted here.
        assert before == connections_accepted(offline_sidecar)


class TestFork:
    def test_a_forked_child_uses_its_own_connection(
        self, client: Client, offline_sidecar: SidecarProc
    ) -> None:
        """After fork, parent and child each get their own answers on their own connection."""
        import os

        assert 1 == client.resolve("fraud", "production").version  # the parent's connection
        before = connections_accepted(offline_sidecar)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answer through the pipe, never return into pytest
            code = 1
            try:
                os.close(read_end)
                version = client.resolve("fraud", "canary").version
                os.write(write_end, str(version).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            child_answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert 2 == client.resolve("fraud", "2").version
        assert (0, b"2") == (os.waitstatus_to_exitcode(status), child_answer)
        assert before + 1 == connections_accepted(offline_sidecar)


class TestErrors:
    def test_missing_model_alias_version(self, client: Client) -> None:
        """Each kind of miss raises its own class, with the identifying fields."""
        with pytest.raises(ModelNotFound) as model_missing:
            client.resolve("nope", "production")
        assert "nope" == model_missing.value.model
        with pytest.raises(AliasNotFound) as alias_missing:
            client.resolve("fraud", "staging")
        assert "staging" == alias_missing.value.alias
        with pytest.raises(VersionNotFound):
            client.resolve("fraud", 99)
        with pytest.raises(VersionNotFound):
            client.resolve("empty", "latest")

    def test_bad_request_is_invalid_field(self, client: Client) -> None:
        """A request the sidecar refuses (empty model name) raises InvalidField."""
        with pytest.raises(InvalidField) as caught:
            client.resolve("", "production")
        assert "model" == caught.value.field

    def test_connection_survives_an_error(
        self, client: Client, offline_sidecar: SidecarProc
    ) -> None:
        """An error answer leaves the reused connection usable."""
        client.ping()
        before = connections_accepted(offline_sidecar)
        with pytest.raises(AliasNotFound):
            client.resolve("fraud", "staging")
        assert 1 == client.resolve("fraud", "production").version
        assert before == connections_accepted(offline_sidecar)


class TestUnavailable:
    def test_missing_socket_gives_up_at_the_deadline(self, tmp_path: Path) -> None:
        """No socket file: retried until the deadline, then Unavailable naming the path."""
        path = short_dir() / "absent.sock"
        with pytest.raises(Unavailable) as caught:
            Client(path, connect_deadline_s=0.3).resolve("fraud", "production")
        assert str(path) == caught.value.socket
        assert "No such file" in caught.value.message
        shutil.rmtree(path.parent)

    def test_a_file_that_is_not_a_socket(self, tmp_path: Path) -> None:
        """A regular file at the path (connection refused) ends in Unavailable too."""
        path = tmp_path / "plain"
        path.write_text("not a socket")
        with pytest.raises(Unavailable):
            Client(path, connect_deadline_s=0.2).ping()
        assert "not a socket" == path.read_text()

    def test_full_backlog_is_retried_until_accepted(self) -> None:
        """A busy socket (listen backlog full: EAGAIN) is retried; Unavailable at the deadline,
        an answer once the server accepts again."""
        sock_dir = short_dir()
        path = sock_dir / "busy.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fillers: list[socket.socket] = []
        stop = threading.Event()
        thread = threading.Thread(target=answer_pings, args=(server, stop), daemon=True)
        try:
            server.bind(str(path))
            server.listen(0)
            while True:  # queue connections nobody accepts until the kernel refuses more
                filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                filler.setblocking(False)
                fillers.append(filler)
                if filler.connect_ex(str(path)) != 0:
                    break
            with pytest.raises(Unavailable) as caught:
                Client(path, connect_deadline_s=0.2).ping()
            assert "temporarily unavailable" in caught.value.message
            thread.start()
            with Client(path, connect_deadline_s=30) as reg:
                assert "pong" == reg.ping()
        finally:
            stop.set()
            for filler in fillers:
                filler.close()
            if thread.is_alive():
                thread.join(10)
            server.close()
            shutil.rmtree(sock_dir, ignore_errors=True)

    def test_too_long_path_is_a_usage_error(self) -> None:
        """A path longer than a Unix socket allows is refused at once."""
        with pytest.raises(InvalidRequest):
            Client("/tmp/" + "x" * 200).ping()

    @pytest.mark.slow
    def test_waits_for_a_sidecar_that_is_starting(self, seeded_dir: Path) -> None:
        """A call made before the sidecar exists is answered once it comes up."""
        socket_path = seeded_dir / "s.sock"
        answers: list[Any] = []

        def ping() -> None:
            try:
                with Client(socket_path, connect_deadline_s=60) as reg:
                    answers.append(reg.ping())
            except Exception as exc:  # reported through the list
                answers.append(exc)

        thread = threading.Thread(target=ping)
        thread.start()
        sidecar = start_sidecar(
            (seeded_dir / "no-replica").as_uri(), sock_dir=seeded_dir, socket_path=socket_path
        )
        try:
            thread.join(60)
            assert ["pong"] == answers
        finally:
            sidecar.stop()

    @pytest.mark.slow
    def test_reconnects_after_a_sidecar_restart(self, seeded_dir: Path) -> None:
        """The reused connection dies with the sidecar; the next call opens a new one."""
        replica = (seeded_dir / "no-replica").as_uri()
        sidecar = start_sidecar(replica, sock_dir=seeded_dir)
        with Client(sidecar.socket) as reg:
            try:
                assert 1 == reg.resolve("fraud", "production").version
            finally:
                sidecar.stop()
            sidecar = start_sidecar(replica, sock_dir=seeded_dir)
            try:
                assert 1 == reg.resolve("fraud", "production").version
            finally:
                sidecar.stop()


class TestAsyncClient:
    async def test_resolve_and_errors(self, offline_sidecar: SidecarProc) -> None:
        """The async client answers the same records and raises the same classes."""
        async with AsyncClient(offline_sidecar.socket) as reg:
            resolved = await reg.resolve("fraud", "canary")
            assert (2, "canary") == (resolved.version, resolved.ref)
            with pytest.raises(AliasNotFound):
                await reg.resolve("fraud", "staging")
            assert "pong" == await reg.ping()
            assert 3 == (await reg.status())["models"]
            assert "fraud" == (await reg.get("fraud"))["name"]

    async def test_concurrent_calls_share_the_connection(
        self, offline_sidecar: SidecarProc
    ) -> None:
        """Many concurrent awaits on one AsyncClient all get their own answer."""
        import asyncio

        async with AsyncClient(offline_sidecar.socket) as reg:
            refs = ["production", "canary", "1", "2", "3", "latest"] * 10
            answers = await asyncio.gather(*(reg.resolve("fraud", ref) for ref in refs))
        assert refs == [answer.ref for answer in answers]

    async def test_cancelled_call_does_not_leak_its_answer(
        self, offline_sidecar: SidecarProc
    ) -> None:
        """A call cancelled while waiting leaves no stale answer for the next call."""
        import asyncio

        async with AsyncClient(offline_sidecar.socket) as reg:
            revision = (await reg.status())["revision"]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    reg.resolve("fraud", "canary", min_revision=revision + 100, wait_ms=2000),
                    0.2,
                )
            resolved = await reg.resolve("fraud", "production")
        assert (1, "production") == (resolved.version, resolved.ref)

    async def test_missing_socket(self) -> None:
        """No socket: Unavailable after the deadline."""
        path = short_dir() / "absent.sock"
        with pytest.raises(Unavailable):
            await AsyncClient(path, connect_deadline_s=0.2).ping()
        shutil.rmtree(path.parent)
