"""``reg central serve`` and ``reg central status`` as a user runs them."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.procs import BIN_DIR, CentralProc, free_port, start_central, wait_for

pytestmark = pytest.mark.integration


def reg(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "reg"), *args], capture_output=True, text=True, timeout=timeout
    )


class TestStatus:
    @pytest.mark.parametrize("where", ["before", "after"])
    def test_status_shows_replication(self, central: CentralProc, where: str) -> None:
        """--json status (before or after the command) carries the replication state."""
        command = ["--json", "central", "status"] if where == "before" else ["central", "status"]
        result = reg("--central", central.url, *command, *(["--json"] if where == "after" else []))
        assert 0 == result.returncode, result.stderr
        health = json.loads(result.stdout)
        expected = f"file://{central.data_dir.resolve()}/replica"
        assert ("ok", expected) == (health["status"], health["replication"]["url"])

    def test_status_text_names_the_replica(self, central: CentralProc) -> None:
        """The text form lists the replica URL and litestream's state."""
        result = reg("--central", central.url, "central", "status")
        assert 0 == result.returncode, result.stderr
        assert "replica:" in result.stdout and "litestream:" in result.stdout

    def test_unreachable_central_exits_5(self) -> None:
        """A central that does not answer gives exit code 5 and one line on stderr."""
        result = reg("--central", f"http://127.0.0.1:{free_port()}", "central", "status")
        assert 5 == result.returncode
        assert 1 == len(result.stderr.strip().splitlines())


class TestServe:
    def test_prints_url_and_token_file(self, central: CentralProc) -> None:
        """serve prints one line with its URL and the admin token file."""
        token_file = central.data_dir.resolve() / "admin.token"
        expected = f"central listening on {central.url} (admin token in {token_file})"
        assert expected in central.log().splitlines()

    def test_replica_none_disables_replication(self, tmp_path: Path) -> None:
        """--replica none serves without litestream: /healthz says replication is null."""
        central = start_central(tmp_path / "data", "none")
        try:
            assert None is central.healthz()["replication"]
        finally:
            assert 0 == central.stop()

    def test_bad_replica_url_is_one_line_and_exit_1(self, tmp_path: Path) -> None:
        """An unsupported replica URL is refused with one line, before anything is served."""
        result = reg(
            "central",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--replica",
            "ftp://host/x",
        )
        assert 1 == result.returncode
        assert "Error: replication: replica URL 'ftp://host/x'" in result.stderr
        assert "Traceback" not in result.stderr

    @pytest.mark.parametrize(
        ("damage", "message"),
        [
            ("newer", "database schema version 99 is newer than this modelreg supports"),
            ("garbage", "cannot open the databases in"),
            ("file", "cannot use data directory"),
        ],
    )
    def test_unusable_data_dir_is_one_line_and_exit_1(
        self, tmp_path: Path, damage: str, message: str
    ) -> None:
        """A database from a newer release, a file that is not a database, or a data directory
        that cannot be one: one line naming the problem, exit 1, no traceback."""
        data = tmp_path / "data"
        if damage == "file":
            (tmp_path / "file").write_text("not a directory\n")
            data = tmp_path / "file" / "data"
        else:
            data.mkdir()
            if damage == "newer":
                with sqlite3.connect(data / "registry.db") as conn:
                    conn.execute("PRAGMA user_version = 99")
                conn.close()
            else:
                (data / "registry.db").write_bytes(b"garbage" * 1000)
        listen = f"127.0.0.1:{free_port()}"
        result = reg(
            "central", "serve", "--data-dir", str(data), "--listen", listen, "--replica", "none"
        )
        expected = (1, 1, True)
        lines = result.stderr.strip().splitlines()
        assert expected == (result.returncode, len(lines), message in result.stderr), result.stderr

    def test_bad_listen_is_a_usage_error(self, tmp_path: Path) -> None:
        """A --listen without a port is a usage error (exit 2) naming the setting."""
        result = reg("central", "serve", "--data-dir", str(tmp_path), "--listen", "localhost")
        assert 2 == result.returncode
        assert "listen" in result.stderr


class TestOneWriter:
    def test_a_second_central_on_the_same_data_dir_is_refused(self, tmp_path: Path) -> None:
        """Without replication too, a second central on a data directory in use is refused
        with one line naming the holder, and the first keeps serving."""
        first = start_central(tmp_path / "data", "none")
        try:
            listen = f"127.0.0.1:{free_port()}"
            data = str(tmp_path / "data")
            result = reg(
                "central", "serve", "--data-dir", data, "--listen", listen, "--replica", "none"
            )
            lines = result.stderr.strip().splitlines()
            expected = (1, 1, True, "ok")
            assert expected == (
                result.returncode,
                len(lines),
                f"another central holds the data directory {data} (pid {first.pid}" in lines[0],
                first.healthz()["status"],
            ), result.stderr
        finally:
            assert 0 == first.stop()


class TestRobustness:
    def test_a_client_leaving_mid_body_is_no_error(self, tmp_path: Path) -> None:
        """A client that closes half-way through its body costs an info line, no error or
        traceback and no write, and central keeps serving."""
        central = start_central(tmp_path / "data", "none")
        try:
            before = central.healthz()["revision"]
            host, _, port = central.url.removeprefix("http://").rpartition(":")
            head = (
                "POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {central.admin_token}\r\nContent-Length: 100\r\n\r\n"
            )
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(head.encode() + b'{"name": "half')
            wait_for(lambda: "client left during POST /v1/models" in central.log(), what="log")
            log = central.log()
            expected = (before, False, False)
            assert expected == (central.healthz()["revision"], "Traceback" in log, "ERROR" in log)
        finally:
            assert 0 == central.stop()
