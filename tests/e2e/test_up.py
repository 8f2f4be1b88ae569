"""``reg up``: one stack per data directory, Ctrl-C leaves nothing behind, --demo is idempotent.

Every test runs the installed ``reg up`` (real central, real litestream, real sidecar) in a short
temporary directory and stops it with SIGINT in a ``finally``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.central.client import CentralClient
from modelreg.cli.main import root
from modelreg.cli.up import LOCK_NAME, AlreadyRunning, Layout, acquire_lock, next_steps
from modelreg.cli.up_demo import DEMO_APPROVER, DEMO_MODEL
from modelreg.sidecar.artifacts import fetch_artifact
from modelreg.sidecar.client import Client
from tests.clirunner import CliRunner
from tests.e2e.stack import (
    STACK_ENV,
    UpProc,
    live_pids,
    process_tree,
    short_tempdir,
    start_up,
)
from tests.procs import BIN_DIR, wait_for


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _revision(up: UpProc) -> int:
    return int(CentralClient(up.url).health()["revision"])


class TestLock:
    def test_second_lock_on_the_same_directory_is_refused_and_names_the_holder(
        self, tmp_path: Path
    ) -> None:
        """A second acquire fails with the first holder's PID and leaves the lock file as it was."""
        first = acquire_lock(tmp_path)
        try:
            before = (tmp_path / LOCK_NAME).read_text()
            with pytest.raises(AlreadyRunning) as caught:
                acquire_lock(tmp_path)
            assert f"pid {os.getpid()}" in str(caught.value)
            assert before == (tmp_path / LOCK_NAME).read_text()
        finally:
            first.close()

    def test_lock_is_free_again_once_its_holder_closes_it(self, tmp_path: Path) -> None:
        """Closing the lock (what a stopped or killed reg up does) lets the next one take it."""
        acquire_lock(tmp_path).close()
        second = acquire_lock(tmp_path)
        second.close()
        assert f"{os.getpid()}\n" == (tmp_path / LOCK_NAME).read_text()


@pytest.mark.integration
@pytest.mark.slow
class TestHints:
    def test_default_layout_needs_no_exports(self) -> None:
        """On the defaults the hints are the three commands, with no environment to set."""
        layout = Layout(data_dir=Path("/x/.reg"), listen="127.0.0.1:8080")
        lines = next_steps(layout, None, default_layout=True)
        assert not [line for line in lines if "export" in line]
        assert [
            "  reg models create mymodel",
            "  reg push mymodel --artifact ./model.bin",
            "  reg status",
        ] == [line for line in lines if line.startswith("  reg ")]

    def test_other_layout_exports_what_reg_needs(self) -> None:
        """Elsewhere the hints export the URL, data dir and socket reg must use."""
        layout = Layout(data_dir=Path("/x/d"), listen="127.0.0.1:9000")
        lines = next_steps(layout, "fraud", default_layout=False)
        assert (
            "  export REG_CENTRAL_URL=http://127.0.0.1:9000 REG_DATA_DIR=/x/d "
            "REG_SOCKET=/x/d/sidecar.sock"
        ) in lines
        assert "  reg resolve fraud@production" in lines

    def test_an_https_central_url_is_a_usage_error(self) -> None:
        """reg up serves plain http on this machine, so --central https://… is refused (exit 2)."""
        result = CliRunner().invoke(root, ["--central", "https://reg.example.com", "up"])
        assert 2 == result.exit_code
        assert "plain http" in result.stderr


class TestTwice:
    def test_second_up_on_the_same_data_dir_refuses_and_changes_nothing(
        self, workdir: Path
    ) -> None:
        """While one reg up runs, a second exits 4 with a clear message; the first keeps serving."""
        up = start_up(workdir)
        try:
            lock_before = (up.data_dir / LOCK_NAME).read_text()
            tree_before = process_tree(up.pid)
            second = subprocess.run(
                [str(BIN_DIR / "reg"), "up", "--data-dir", ".reg", "--listen", "127.0.0.1:1"],
                cwd=workdir,
                env={**os.environ, **STACK_ENV},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 4
            assert "already running" in second.stderr
            assert f"pid {up.pid}" in second.stderr
            assert lock_before == (up.data_dir / LOCK_NAME).read_text()
            assert tree_before == process_tree(up.pid)
            assert CentralClient(up.url).health()["status"] == "ok"
            with Client(up.socket) as sidecar:
                assert sidecar.status()["ready"] is True
        finally:
            assert up.stop() == 0


@pytest.mark.integration
class TestStartFailures:
    def test_a_taken_port_is_reported_before_anything_starts(self, workdir: Path) -> None:
        """With the central port already listening, reg up exits 5 naming it and starts nothing."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = subprocess.run(
                [str(BIN_DIR / "reg"), "up", "--listen", f"127.0.0.1:{port}"],
                cwd=workdir,
                env={**os.environ, **STACK_ENV},
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert 5 == result.returncode
        assert f"127.0.0.1:{port} is already in use" in result.stderr
        assert not (workdir / ".reg" / "logs").exists()


@pytest.mark.integration
@pytest.mark.slow
class TestStop:
    def test_sigint_stops_every_process_and_a_restart_resumes(self, workdir: Path) -> None:
        """Ctrl-C ends reg up, central, the sidecar and their litestream children; data stays."""
        up = start_up(workdir)
        try:
            tree = process_tree(up.pid)
            client = CentralClient(up.url, token=up.admin_token)
            client.create_model("kept")
            revision = _revision(up)
        finally:
            code = up.stop(signal.SIGINT)
        assert code == 0
        assert len(tree) >= 4  # central, sidecar and a litestream under each
        wait_for(lambda: not (tree & set(live_pids())), timeout=10, what="no process left")
        assert "stopped; the data stays" in up.output()

        again = start_up(workdir, port=up.port)
        try:
            assert revision <= _revision(again)
            assert (
                CentralClient(again.url, token=again.admin_token).get_model("kept")["name"]
                == "kept"
            )
        finally:
            assert again.stop(signal.SIGTERM) == 0

    def test_children_stop_when_reg_up_is_killed_outright_and_it_starts_again(
        self, workdir: Path
    ) -> None:
        """SIGKILL on reg up: the kernel SIGTERMs its children, and the next reg up starts."""
        up = start_up(workdir)
        try:
            tree = process_tree(up.pid)
        finally:
            up.stop(signal.SIGKILL)
        wait_for(lambda: not (tree & set(live_pids())), timeout=30, what="no process left")

        again = start_up(workdir, port=up.port)
        try:
            assert "ok" == CentralClient(again.url).health()["status"]
        finally:
            assert 0 == again.stop()


@pytest.mark.integration
@pytest.mark.slow
class TestChildDies:
    def test_a_dying_sidecar_stops_the_stack_with_its_log(self, workdir: Path) -> None:
        """When the sidecar is killed, reg up says so with its log, stops central and exits 5."""
        up = start_up(workdir)
        try:
            tree = process_tree(up.pid)
            sidecar_pid = up.child_pid("sidecar")
            assert sidecar_pid in tree
            os.kill(sidecar_pid, signal.SIGKILL)
            assert 5 == up.proc.wait(30)
        finally:
            up.stop()
        assert f"sidecar (pid {sidecar_pid}) exited with code -9" in up.output()
        wait_for(lambda: not (tree & set(live_pids())), timeout=30, what="no process left")


@pytest.mark.integration
@pytest.mark.slow
class TestDemo:
    def test_demo_registers_approves_promotes_and_a_second_run_adds_nothing(
        self, workdir: Path
    ) -> None:
        """--demo leaves fraud@production on an approved version; rerunning changes no revision."""
        up = start_up(workdir, ["--demo"])
        try:
            admin = CentralClient(up.url, token=up.admin_token)
            production = admin.resolve(DEMO_MODEL, "production")["version"]
            assert production["status"] == "approved"
            assert production["decision"]["by"] == DEMO_APPROVER
            assert production["created_by"] == "admin"
            assert len(admin.list_versions(DEMO_MODEL)["items"]) == 3
            with Client(up.socket) as sidecar:
                resolved = sidecar.resolve(DEMO_MODEL, "production")
            assert production["version"] == resolved.version
            fetched = fetch_artifact(resolved, workdir / "fetched.bin")  # sha256 verified
            assert resolved.size == fetched.stat().st_size
            hints = [line.split() for line in up.output().splitlines() if line.startswith("  reg ")]
            assert 3 == len(hints)
            for hint in hints:  # the three commands reg up suggests work as printed
                ran = subprocess.run(
                    hint, cwd=workdir, env=up.env(), capture_output=True, text=True, timeout=60
                )
                assert 0 == ran.returncode, f"{hint}: {ran.stderr}"
            revision = _revision(up)
        finally:
            assert up.stop() == 0

        again = start_up(workdir, ["--demo"], port=up.port)
        try:
            assert revision == _revision(again)
            assert "version 2 is approved" in again.output()
        finally:
            assert again.stop() == 0
