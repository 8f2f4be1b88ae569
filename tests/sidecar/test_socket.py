"""The msgpack socket of a real sidecar process: every op, pipelining, and hostile input.

The sidecar here serves a seeded local copy while its replica is unreachable, which is also
the fail-static case: it answers from the copy at once.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelreg.sidecar.protocol import encode_frame
from modelreg.sidecar.server import MAX_HELD_ANSWERS, MAX_WATCHES
from tests.procs import wait_for
from tests.sidecar.helpers import (
    Conn,
    SidecarProc,
    http_get,
    short_dir,
    sidecar_refuses,
    start_sidecar,
)

pytestmark = pytest.mark.integration

HOSTILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def good(offline_sidecar: SidecarProc) -> Iterator[Conn]:
    """A well-behaved client's long-lived connection, used throughout the hostile tests."""
    with Conn(offline_sidecar.socket) as conn:
        yield conn


def still_serving(sidecar: SidecarProc, good: Conn) -> None:
    """The process is alive and a well-behaved connection still resolves."""
    assert sidecar.alive()
    answer = good.ask({"op": "resolve", "model": "fraud", "ref": "production", "id": 1})
    assert (True, 1, 1) == (answer["ok"], answer["result"]["version"], answer["id"])


class TestOps:
    def test_resolve_alias(self, offline_sidecar: SidecarProc) -> None:
        """resolve answers the aliased version with ref, revision and age."""
        answer = offline_sidecar.resolve("fraud", "canary")
        assert answer["ok"] is True
        assert (2, "canary") == (answer["result"]["version"], answer["result"]["ref"])
        assert answer["revision"] > 0
        assert answer["age_ms"] >= 0

    def test_resolve_number_and_latest(self, offline_sidecar: SidecarProc) -> None:
        """A version number (int or string) and latest (highest non-archived) resolve."""
        assert 3 == offline_sidecar.resolve("fraud", 3)["result"]["version"]
        assert "3" == offline_sidecar.resolve("fraud", "3")["result"]["ref"]
        assert 2 == offline_sidecar.resolve("fraud", "latest")["result"]["version"]

    @pytest.mark.parametrize(
        ("model", "ref", "code"),
        [
            ("nope", "production", "model_not_found"),
            ("fraud", "9", "version_not_found"),
            ("fraud", "staging", "alias_not_found"),
            ("fraud", "²", "alias_not_found"),  # a Unicode digit is not a version number
            ("fraud", "٣", "alias_not_found"),
            ("empty", "latest", "version_not_found"),
        ],
    )
    def test_resolve_misses(
        self, offline_sidecar: SidecarProc, model: str, ref: str, code: str
    ) -> None:
        """A miss answers the code of what is missing, and echoes the id."""
        answer = offline_sidecar.ask({"op": "resolve", "model": model, "ref": ref, "id": "x"})
        assert (False, code, "x") == (answer["ok"], answer["error"]["code"], answer["id"])

    def test_get_list_ping_status(self, offline_sidecar: SidecarProc) -> None:
        """get, list, ping and status answer."""
        get = offline_sidecar.ask({"op": "get", "model": "fraud"})["result"]
        assert {"canary": 2, "production": 1} == get["aliases"]
        items = offline_sidecar.ask({"op": "list"})["result"]["items"]
        assert ["churn", "empty", "fraud"] == [item["name"] for item in items]
        assert "pong" == offline_sidecar.ask({"op": "ping"})["result"]
        status = offline_sidecar.status()
        assert (True, 3, 4) == (status["ready"], status["models"], status["versions"])
        expected = {
            "revision",
            "age_ms",
            "stale",
            "ready",
            "follower",
            "models",
            "versions",
            "connections",
            "lookups",
            "errors",
            "uptime_s",
            "loaded_at",
            "index_load_ms",
        }
        assert expected <= set(status)
        assert {"state", "pid", "restarts"} <= set(status["follower"])

    def test_min_revision_already_reached(self, offline_sidecar: SidecarProc) -> None:
        """min_revision at or below the current revision answers at once."""
        revision = offline_sidecar.status()["revision"]
        answer = offline_sidecar.resolve("fraud", "production", min_revision=revision)
        assert answer["ok"] is True

    def test_min_revision_times_out(self, offline_sidecar: SidecarProc) -> None:
        """An unreachable min_revision answers timeout after wait_ms (or at once without it)."""
        revision = offline_sidecar.status()["revision"]
        now = offline_sidecar.resolve("fraud", "production", min_revision=revision + 1)
        later = offline_sidecar.resolve(
            "fraud", "production", min_revision=revision + 1, wait_ms=200
        )
        assert ("timeout", "timeout") == (now["error"]["code"], later["error"]["code"])

    def test_pipelined_answers_keep_request_order(self, offline_sidecar: SidecarProc) -> None:
        """Many requests in one write, including one that waits, answer in request order."""
        revision = offline_sidecar.status()["revision"]
        requests: list[dict[str, Any]] = [
            {"op": "resolve", "model": "fraud", "ref": "production", "id": i} for i in range(50)
        ]
        requests[10] = {**requests[10], "min_revision": revision + 5, "wait_ms": 150}
        requests[20] = {"op": "ping", "id": 20}
        requests[30] = {"op": "nope", "id": 30}
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(b"".join(encode_frame(r) for r in requests))
            answers = [conn.read() for _ in requests]
        assert list(range(50)) == [a["id"] for a in answers]
        assert "timeout" == answers[10]["error"]["code"]
        assert "invalid_field" == answers[30]["error"]["code"]

    def test_http_matches_socket(self, offline_sidecar: SidecarProc) -> None:
        """The JSON answer over HTTP has the same result as the socket answer."""
        status, body = http_get(offline_sidecar.http_socket, "/v1/resolve/fraud/production")
        via_http = json.loads(body)
        via_socket = offline_sidecar.resolve("fraud", "production")
        assert (200, via_socket["result"]) == (status, via_http["result"])


class TestHostileInput:
    @HOSTILE
    @given(st.binary(min_size=1, max_size=300))
    def test_random_bytes(self, offline_sidecar: SidecarProc, good: Conn, data: bytes) -> None:
        """Random bytes get error frames or a closed connection, never a crash."""
        with Conn(offline_sidecar.socket, timeout=5) as conn:
            conn.send_raw(data)
            conn.sock.shutdown(socket.SHUT_WR)
            try:
                while True:
                    answer = conn.read()
                    assert isinstance(answer, dict)
            except (ConnectionError, TimeoutError):
                pass
        still_serving(offline_sidecar, good)

    @HOSTILE
    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats()
            | st.text(max_size=40)
            | st.binary(max_size=40),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["op", "model", "ref", "id", "x"]) | st.text(),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=15,
        )
    )
    def test_arbitrary_payloads(
        self, offline_sidecar: SidecarProc, good: Conn, payload: Any
    ) -> None:
        """Any msgpack value as a request gets exactly one answer frame."""
        answer = good.ask(payload)
        assert isinstance(answer["ok"], bool)
        if not answer["ok"]:
            assert answer["error"]["code"] in {
                "bad_request",
                "invalid_field",
                "model_not_found",
                "version_not_found",
                "alias_not_found",
                "timeout",
                "not_found",
            }
        still_serving(offline_sidecar, good)

    @HOSTILE
    @given(
        st.sampled_from(["resolve", "watch", "get"]),
        st.text(max_size=300) | st.sampled_from(["fraud", "churn", "empty"]),
        st.text(max_size=300) | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    )
    def test_arbitrary_names_and_refs(
        self, offline_sidecar: SidecarProc, good: Conn, op: str, model: str, ref: Any
    ) -> None:
        """Any model name and ref (Unicode digits, huge ints, empty) answers one frame."""
        with Conn(offline_sidecar.socket) as conn:
            answer = conn.ask({"op": op, "model": model, "ref": ref})
        assert answer["ok"] or answer["error"]["code"] in {
            "invalid_field",
            "model_not_found",
            "version_not_found",
            "alias_not_found",
        }
        still_serving(offline_sidecar, good)

    @pytest.mark.parametrize(
        ("payload", "code"),
        [
            ([1, 2, 3], "bad_request"),
            ("resolve", "bad_request"),
            ({"op": "drop_tables"}, "invalid_field"),
            ({"op": "resolve", "model": 7, "ref": "production"}, "invalid_field"),
            ({"op": "resolve", "model": "fraud", "ref": 1.5}, "invalid_field"),
            ({"op": "resolve", "model": "fraud", "ref": "x", "wait_ms": "soon"}, "invalid_field"),
            ({"op": "get", "model": None}, "invalid_field"),
            ({1: 2}, "invalid_field"),
        ],
    )
    def test_bad_requests_get_error_frames(
        self, offline_sidecar: SidecarProc, good: Conn, payload: Any, code: str
    ) -> None:
        """Non-map payloads, unknown ops and wrong types answer an error frame; the
        connection stays usable."""
        with Conn(offline_sidecar.socket) as conn:
            assert code == conn.ask(payload)["error"]["code"]
            assert conn.ask({"op": "ping"})["ok"] is True
        still_serving(offline_sidecar, good)

    def test_not_msgpack_frame(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """A well-framed payload that is not msgpack answers bad_request and keeps the stream."""
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(struct.pack(">I", 2) + b"\xc1\xc1" + encode_frame({"op": "ping"}))
            assert "bad_request" == conn.read()["error"]["code"]
            assert "pong" == conn.read()["result"]
        still_serving(offline_sidecar, good)

    def test_four_gib_length_prefix(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """A 4 GiB length prefix answers payload_too_large and closes the connection."""
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(b"\xff\xff\xff\xff" + b"x" * 100)
            assert "payload_too_large" == conn.read()["error"]["code"]
            assert conn.closed_by_peer()
        still_serving(offline_sidecar, good)

    def test_oversized_request(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """A request one byte over 64 KiB is refused before its payload is read."""
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(struct.pack(">I", 65537))
            assert "payload_too_large" == conn.read()["error"]["code"]
        still_serving(offline_sidecar, good)

    def test_truncated_frame_then_close(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """A client that sends half a frame and disconnects leaves nothing behind."""
        before = offline_sidecar.status()["connections"]
        frame = encode_frame({"op": "resolve", "model": "fraud", "ref": "production"})
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(frame[: len(frame) // 2])
        wait_for(lambda: offline_sidecar.status()["connections"] <= before, what="cleanup")
        still_serving(offline_sidecar, good)

    def test_partial_frame_times_out(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """A frame left incomplete past the partial-frame timeout (1 s here) is closed."""
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(b"\x00\x00")
            assert conn.closed_by_peer(timeout=10)
        still_serving(offline_sidecar, good)

    def test_watch_limit_per_connection(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """Watches beyond the per-connection limit are refused; the first ones stay."""
        watch = {"op": "watch", "model": "fraud", "ref": "production"}
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(
                b"".join(encode_frame({**watch, "id": i}) for i in range(MAX_WATCHES + 5))
            )
            answers = [conn.read() for _ in range(MAX_WATCHES + 5)]
        assert [True] * MAX_WATCHES == [a["ok"] for a in answers[:MAX_WATCHES]]
        assert ["bad_request"] * 5 == [a["error"]["code"] for a in answers[MAX_WATCHES:]]
        still_serving(offline_sidecar, good)

    def test_unbounded_pipelining_behind_a_wait(
        self, offline_sidecar: SidecarProc, good: Conn
    ) -> None:
        """Thousands of requests piled behind a waiting one close that connection only."""
        revision = offline_sidecar.status()["revision"]
        wait = {"op": "resolve", "model": "fraud", "ref": "production"}
        frames = [encode_frame({**wait, "min_revision": revision + 1, "wait_ms": 60_000})]
        frames += [encode_frame({"op": "ping"})] * (MAX_HELD_ANSWERS + 10)
        with Conn(offline_sidecar.socket) as conn:
            conn.send_raw(b"".join(frames))
            assert "unavailable" == conn.read()["error"]["code"]
            assert conn.closed_by_peer()
        still_serving(offline_sidecar, good)

    @pytest.mark.slow
    def test_thousands_of_idle_connections(self, offline_sidecar: SidecarProc, good: Conn) -> None:
        """2,000 idle connections do not disturb a working client and are closed when idle."""
        idle = []
        try:
            for _ in range(2000):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(offline_sidecar.socket))
                idle.append(sock)
            for _ in range(20):
                still_serving(offline_sidecar, good)
            wait_for(
                lambda: offline_sidecar.status()["connections"] >= 2000, what="2000 connections"
            )

            # the idle timeout is 5 s here; the good connection stays busy meanwhile
            def closed() -> bool:
                still_serving(offline_sidecar, good)
                return bool(offline_sidecar.status()["connections"] < 100)

            wait_for(closed, timeout=30, interval=0.5, what="idle connections closed")
        finally:
            for sock in idle:
                sock.close()
        still_serving(offline_sidecar, good)


class TestSocketFile:
    def test_socket_mode_and_parent_dir(self, offline_sidecar: SidecarProc) -> None:
        """The socket is created 0660."""
        assert 0o660 == stat.S_IMODE(os.stat(offline_sidecar.socket).st_mode)

    def test_refuses_a_regular_file_at_the_path(self, tmp_path: Any) -> None:
        """An existing non-socket file at the socket path is left alone and start fails."""
        sock_dir = short_dir()
        (sock_dir / "s.sock").write_text("precious")
        output = sidecar_refuses((tmp_path / "none").as_uri(), sock_dir / "s.sock", tmp_path)
        assert "is not a socket" in output
        assert "precious" == (sock_dir / "s.sock").read_text()

    def test_refuses_a_live_socket(self, offline_sidecar: SidecarProc, tmp_path: Any) -> None:
        """A second sidecar on the same socket path refuses to start; the first keeps serving."""
        output = sidecar_refuses((tmp_path / "none").as_uri(), offline_sidecar.socket, tmp_path)
        assert "another process is serving" in output
        assert offline_sidecar.ask({"op": "ping"})["ok"] is True

    def test_replaces_a_stale_socket_and_creates_parent(self, tmp_path: Any) -> None:
        """A socket file left by a dead process is replaced; a missing parent is made 0750."""
        sock_dir = short_dir()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(sock_dir / "s.sock"))
        stale.close()
        sidecar = start_sidecar((tmp_path / "none").as_uri(), sock_dir=sock_dir)
        try:
            assert sidecar.ask({"op": "ping"})["ok"] is True
        finally:
            sidecar.stop()
        nested = short_dir() / "run" / "reg"
        sidecar = start_sidecar((tmp_path / "none").as_uri(), socket_path=nested / "s.sock")
        try:
            assert 0o750 == stat.S_IMODE(os.stat(nested).st_mode)
        finally:
            sidecar.stop()

    def test_no_copy_answers_not_ready_at_once(self, tmp_path: Any) -> None:
        """With no local copy and no replica, lookups answer not_ready immediately."""
        sidecar = start_sidecar((tmp_path / "none").as_uri())
        try:
            answer = sidecar.resolve("fraud", "production")
            assert "not_ready" == answer["error"]["code"]
            assert sidecar.status()["ready"] is False
            status, body = sidecar.healthz()
            assert (503, False) == (status, body["ready"])
            assert body["reason"]
        finally:
            sidecar.stop()

    def test_connection_limit(self, tmp_path: Any) -> None:
        """Connections beyond the limit get one unavailable frame and are closed."""
        sidecar = start_sidecar((tmp_path / "none").as_uri(), extra_args=["--max-connections", "3"])
        try:
            with Conn(sidecar.socket) as first, Conn(sidecar.socket) as second:
                assert first.ask({"op": "ping"})["ok"] is True
                with Conn(sidecar.socket) as third:
                    assert third.ask({"op": "ping"})["ok"] is True
                    with Conn(sidecar.socket) as fourth:
                        assert "unavailable" == fourth.read()["error"]["code"]
                        assert fourth.closed_by_peer()
                assert second.ask({"op": "ping"})["ok"] is True
        finally:
            sidecar.stop()
