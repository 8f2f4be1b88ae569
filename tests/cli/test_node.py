"""``reg resolve``, ``reg watch`` and ``reg status`` against a real sidecar (and central)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.central.records import now
from modelreg.cli.main import root
from tests.cli.conftest import CLEAN_ENV, Reg, one_line_error
from tests.clirunner import CliRunner, Result
from tests.procs import BIN_DIR, free_port, stop_process
from tests.sidecar.conftest import sample_registry, seed_copy
from tests.sidecar.helpers import SidecarProc, short_dir, start_sidecar

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[SidecarProc, Path]]:
    """A sidecar serving the sample registry from a local copy, and that copy's path."""
    sock_dir = short_dir()
    db = sample_registry(sock_dir / "registry.db")
    copy = seed_copy(db, sock_dir / "data")
    db.close()
    sidecar = start_sidecar((sock_dir / "no-replica").as_uri(), sock_dir=sock_dir)
    try:
        yield sidecar, copy
    finally:
        sidecar.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def run_reg(socket: Path, *args: str) -> Result:
    """``reg --socket SOCKET *args`` in-process."""
    return CliRunner().invoke(root, ["--socket", str(socket), *args], env=dict(CLEAN_ENV))


class TestResolve:
    def test_alias_through_the_sidecar(self, node: tuple[SidecarProc, Path]) -> None:
        """MODEL@ALIAS prints the version, its artifact and the sidecar's freshness."""
        result = run_reg(node[0].socket, "resolve", "fraud@production")
        assert 0 == result.exit_code, result.output
        assert result.output.startswith("fraud@production -> v1\n")
        assert "s3://b/fraud/1" in result.output
        assert "answered by: sidecar" in result.output

    def test_json(self, node: tuple[SidecarProc, Path]) -> None:
        """--json (before or after the command) prints the answer with revision and age."""
        for args in (("--json", "resolve", "fraud@2"), ("resolve", "fraud@2", "--json")):
            result = run_reg(node[0].socket, *args)
            assert 0 == result.exit_code, result.output
            answer = json.loads(result.output)
            assert ("fraud", "2", 2, "sidecar") == (
                answer["model"],
                answer["ref"],
                answer["version"]["version"],
                answer["source"],
            )
            assert node[0].status()["revision"] == answer["revision"]

    def test_model_alone_means_latest(self, node: tuple[SidecarProc, Path]) -> None:
        """MODEL without @REF resolves the latest non-archived version."""
        result = run_reg(node[0].socket, "--json", "resolve", "fraud")
        assert 2 == json.loads(result.output)["version"]["version"]

    def test_not_found_exits_3(self, node: tuple[SidecarProc, Path]) -> None:
        """A missing alias is one error line and exit code 3."""
        result = run_reg(node[0].socket, "resolve", "fraud@staging")
        assert 3 == result.exit_code
        assert "staging" in one_line_error(result)

    def test_bad_argument_exits_2(self, node: tuple[SidecarProc, Path]) -> None:
        """An empty model or ref is a usage error (exit code 2)."""
        for arg in ("@production", "fraud@"):
            result = run_reg(node[0].socket, "resolve", arg)
            assert 2 == result.exit_code, arg
            assert "MODEL@REF" in result.stderr

    def test_wait_ms_needs_min_revision(self, node: tuple[SidecarProc, Path]) -> None:
        """--wait-ms alone is a usage error."""
        assert 2 == run_reg(node[0].socket, "resolve", "fraud@1", "--wait-ms", "5").exit_code

    def test_min_revision_already_reached(self, node: tuple[SidecarProc, Path]) -> None:
        """--min-revision at or below the sidecar's revision answers at once."""
        revision = node[0].status()["revision"]
        result = run_reg(node[0].socket, "resolve", "fraud@1", "--min-revision", str(revision))
        assert 0 == result.exit_code, result.output

    def test_no_sidecar_exits_5(self) -> None:
        """No sidecar on --socket: one error line naming the socket, exit code 5."""
        path = short_dir() / "absent.sock"
        result = run_reg(path, "resolve", "fraud@production")
        shutil.rmtree(path.parent)
        assert 5 == result.exit_code
        assert str(path) in one_line_error(result)


class TestResolveAtCentral:
    def test_central_flag(self, reg: Reg) -> None:
        """--central asks central (no sidecar needed)."""
        reg.seed_version("fraud")
        result = reg("resolve", "fraud@1", "--central", global_args=["--socket", "/nonexistent"])
        assert 0 == result.exit_code, result.output
        assert "answered by: central" in result.output

    def test_at_time(self, reg: Reg) -> None:
        """--at asks central what the ref pointed at then."""
        reg.seed_version("fraud")
        reg.client().set_alias("fraud", "canary", 1)
        moment = now()
        reg.seed_version("fraud", sha256="b" * 64)
        reg.client().set_alias("fraud", "canary", 2)
        result = reg("--json", "resolve", "fraud@canary", "--at", moment)
        assert 0 == result.exit_code, result.output
        answer = json.loads(result.output)
        assert (1, "central") == (answer["version"]["version"], answer["source"])

    def test_bad_time_exits_2(self, reg: Reg) -> None:
        """An --at that is not a time is a usage error."""
        result = reg("resolve", "fraud@canary", "--at", "yesterday-ish")
        assert 2 == result.exit_code
        assert "RFC 3339" in result.stderr

    def test_central_unreachable_exits_5(self) -> None:
        """--central with nobody listening at the URL: one error line, exit code 5."""
        url = f"http://127.0.0.1:{free_port()}"
        result = CliRunner().invoke(
            root, ["--central", url, "resolve", "fraud@1", "--central"], env=dict(CLEAN_ENV)
        )
        assert 5 == result.exit_code
        assert url in one_line_error(result)

    def test_min_revision_is_sidecar_only(self, reg: Reg) -> None:
        """--min-revision with --central is a usage error."""
        result = reg("resolve", "fraud@1", "--central", "--min-revision", "3")
        assert 2 == result.exit_code


class TestStatus:
    def test_human(self, node: tuple[SidecarProc, Path]) -> None:
        """reg status shows revision, age, freshness, follower, counts, lookups and uptime."""
        result = run_reg(node[0].socket, "status")
        assert 0 == result.exit_code, result.output
        labels = [line.split(":", 1)[0] for line in result.output.splitlines()]
        for label in ("state", "revision", "age", "follower", "models", "versions", "lookups"):
            assert label in labels
        assert "uptime" in labels
        assert "models:      3" in result.output
        lookups = next(line for line in result.output.splitlines() if line.startswith("lookups"))
        assert "/s" in lookups

    def test_json(self, node: tuple[SidecarProc, Path]) -> None:
        """reg status --json is the sidecar's status plus the socket and lookups/s."""
        result = run_reg(node[0].socket, "status", "--json")
        status = json.loads(result.output)
        assert (True, 3, str(node[0].socket)) == (
            status["ready"],
            status["models"],
            status["socket"],
        )
        assert {"revision", "age_ms", "stale", "follower", "lookups_per_s"} <= set(status)

    def test_no_sidecar_exits_5(self) -> None:
        """No sidecar: exit code 5."""
        path = short_dir() / "absent.sock"
        result = run_reg(path, "status")
        shutil.rmtree(path.parent)
        assert 5 == result.exit_code


def clean_environ() -> dict[str, str]:
    """This process's environment without any REG_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REG_")}


def move_alias(copy: Path, alias: str, version: int) -> None:
    """Point fraud@alias at ``version`` in the local copy, as an applied replica change."""
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        revision = int(conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]) + 1
        conn.execute(
            "INSERT INTO events (revision, at, actor, action, subject, details, prev_hash, hash)"
            " VALUES (?, ?, 'test', 'alias.set', 'fraud', '{}', '', '')",
            (revision, now()),
        )
        conn.execute(
            "UPDATE aliases SET version = ?, revision = ? WHERE name = ?",
            (version, revision, alias),
        )
    finally:
        conn.close()
    copy.with_name(copy.name + "-txid").write_text(f"{revision:016x}\n")


@contextlib.contextmanager
def reg_watch(socket: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``reg --socket SOCKET *args`` as a child process with its stdout piped; stopped after."""
    with subprocess.Popen(
        [str(BIN_DIR / "reg"), "--socket", str(socket), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_environ(),
    ) as proc:
        try:
            yield proc
        finally:
            stop_process(proc)


class TestWatch:
    def test_one_line_per_change_until_ctrl_c(self, node: tuple[SidecarProc, Path]) -> None:
        """reg watch prints the current answer, a line per change, and exits 0 on Ctrl-C."""
        sidecar, copy = node
        with reg_watch(sidecar.socket, "--json", "watch", "fraud@canary") as proc:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            move_alias(copy, "canary", 1)
            second = json.loads(proc.stdout.readline())
            move_alias(copy, "canary", 2)
            third = json.loads(proc.stdout.readline())
            proc.send_signal(signal.SIGINT)
            assert 0 == proc.wait(30)
        assert [2, 1, 2] == [a["version"]["version"] for a in (first, second, third)]

    def test_text_line(self, node: tuple[SidecarProc, Path]) -> None:
        """Without --json each change is one line naming model@ref, version and artifact."""
        with reg_watch(node[0].socket, "watch", "fraud@production") as proc:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            proc.send_signal(signal.SIGINT)
            assert 0 == proc.wait(30)
        assert "fraud@production -> v1 (approved)  s3://b/fraud/1" in line

    def test_missing_alias_exits_3(self, node: tuple[SidecarProc, Path]) -> None:
        """Watching an alias that does not exist fails at once with exit code 3."""
        result = run_reg(node[0].socket, "watch", "fraud@staging")
        assert 3 == result.exit_code
        assert "staging" in one_line_error(result)
