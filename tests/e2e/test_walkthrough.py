"""The README walkthrough, run as written, command by command, against a real ``reg up`` stack.

The marked blocks of README.md (see ``tests/e2e/readme.py``) run in a short temporary directory
that stands for the repository: ``reg`` is on the PATH (the README's ``. .venv/bin/activate``)
and ``REG_CENTRAL_URL`` points at the stack's free port instead of 8080.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.client import CentralClient
from modelreg.sidecar.client import Client
from tests.e2e.readme import README, Step, commands, walkthrough
from tests.e2e.stack import UpProc, short_tempdir, start_up
from tests.procs import free_port, stop_process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Seconds one command may take (the README's `until` loop waits for the sidecar within it).
COMMAND_TIMEOUT_S = 60.0
#: Seconds the watcher may take to print an expected line.
EXPECT_TIMEOUT_S = 30.0
#: Variables of the developer's shell that would change what the README commands do.
_SCRUBBED = ("REG_TOKEN", "REG_TOKEN_FILE")


@dataclass
class Transcript:
    """What the walkthrough ran and printed, for the assertions and for failure messages."""

    outputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def record(self, command: str, result: subprocess.CompletedProcess[str]) -> None:
        self.outputs[command] = result.stdout
        self.log.append(f"$ {command}  -> exit {result.returncode}\n{result.stdout}{result.stderr}")

    def text(self) -> str:
        return "\n".join(self.log)


class Walkthrough:
    """Runs the README's steps in one working directory, carrying exported variables along."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.up: UpProc | None = None
        self.env: dict[str, str] = {}
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.transcript = Transcript()

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            if step.kind == "stack":
                self.start_stack(step)
            elif step.kind == "run":
                for command in commands(step.code):
                    self.run_command(command, int(step.options.get("exit", "0")), step)
            elif step.kind == "python" and "background" in step.words:
                self.start_background(step)
            elif step.kind == "python":
                self.run_python(step)
            elif step.kind == "expect":
                self.expect(step.words[0], step)

    def start_stack(self, step: Step) -> None:
        assert step.code.strip() == "make up", f"README line {step.line}: the stack block"
        self.up = start_up(self.workdir)
        env = self.up.env()
        for name in _SCRUBBED:
            env.pop(name, None)
        self.env = env

    def _require_stack(self, step: Step) -> None:
        assert self.up is not None, f"README line {step.line}: a step before the stack block"

    def run_command(self, command: str, expected_exit: int, step: Step) -> None:
        self._require_stack(step)
        env_file = self.workdir / ".walkthrough-env"
        script = f'set -o pipefail\n{command}\n__rc=$?\nenv -0 > "{env_file}"\nexit $__rc\n'
        try:
            result = subprocess.run(
                ["bash", "-c", script],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"README line {step.line}: `{command}` still running after {COMMAND_TIMEOUT_S} s"
                f"\n--- transcript ---\n{self.transcript.text()}"
            ) from None
        self.transcript.record(command, result)
        assert expected_exit == result.returncode, (
            f"README line {step.line}: `{command}` exited {result.returncode}, expected "
            f"{expected_exit}\n--- transcript ---\n{self.transcript.text()}"
        )
        exported = env_file.read_bytes().split(b"\0")
        self.env = dict(item.decode().split("=", 1) for item in exported if b"=" in item and item)

    def run_python(self, step: Step) -> None:
        self._require_stack(step)
        result = subprocess.run(
            [sys.executable, "-c", step.code],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        self.transcript.record(f"python (README line {step.line})", result)
        assert result.returncode == 0, (
            f"README line {step.line}: python block failed\n{result.stdout}{result.stderr}"
        )

    def start_background(self, step: Step) -> None:
        self._require_stack(step)
        out = self.workdir / f"background-{step.line}.out"
        with open(out, "wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-u", "-c", step.code],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.background.append((proc, out))

    def expect(self, text: str, step: Step) -> None:
        assert self.background, f"README line {step.line}: expect without a background program"
        proc, out = self.background[-1]
        deadline = time.monotonic() + EXPECT_TIMEOUT_S
        while True:
            lines = [line for line in out.read_text().splitlines() if line.strip()]
            if lines and text == lines[-1]:
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"README line {step.line}: expected the watcher's last line to become "
                    f"{text!r}; it printed:\n{out.read_text()}\n--- transcript ---\n"
                    + self.transcript.text()
                )
            time.sleep(0.05)

    def close(self) -> None:
        for proc, _ in self.background:
            stop_process(proc, signal.SIGTERM)
        if self.up is not None:
            self.up.stop()


@pytest.fixture
def walk() -> Iterator[Walkthrough]:
    workdir = short_tempdir("walk-")
    runner = Walkthrough(workdir)
    try:
        yield runner
    finally:
        runner.close()
        shutil.rmtree(workdir, ignore_errors=True)


class TestWalkthrough:
    def test_readme_walkthrough_runs_as_written(self, walk: Walkthrough) -> None:
        """Every marked README block succeeds in order and the answers are the ones it describes."""
        steps = walkthrough(README.read_text())
        assert [step.kind for step in steps[:1]] == ["stack"]
        walk.run(steps)

        outputs = walk.transcript.outputs
        at_before_rollback = 'reg resolve churn@production --at "$BEFORE_ROLLBACK"'
        assert outputs[at_before_rollback].startswith("churn@production -> v2")
        assert outputs["reg resolve churn@production --central"].startswith(
            "churn@production -> v1"
        )
        python_line = next(text for name, text in outputs.items() if name.startswith("python"))
        assert python_line.startswith("serving churn v1 from file://")
        watched = walk.background[0][1].read_text().split()
        assert [word for word in watched if word.startswith("v")] == ["v1", "v2", "v1"]


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve.py"


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def _publish(admin: CentralClient, approver: CentralClient, path: Path, content: bytes) -> int:
    """Push ``content`` (written to ``path``) as a new churn version and approve it."""
    path.write_bytes(content)
    record, _ = admin.push(
        "churn", path.as_uri(), hashlib.sha256(content).hexdigest(), size=len(content)
    )
    version = int(record["version"])
    approver.approve("churn", version, comment="ok")
    return version


class TestServeExample:
    def test_serve_resolves_verifies_and_swaps_and_refuses_a_tampered_artifact(
        self, walk: Walkthrough
    ) -> None:
        """examples/serve.py serves v1, swaps to v2 when promoted, refuses a tampered v3."""
        up = walk.up = start_up(walk.workdir)
        admin = CentralClient(up.url, token=up.admin_token)
        admin.create_model("churn")
        secret = admin.create_token("alice", "approver")["secret"]
        approver = CentralClient(up.url, token=secret)
        v1 = _publish(admin, approver, walk.workdir / "v1.bin", b"weights one")
        moved = admin.set_alias("churn", "production", v1)
        with Client(up.socket) as sidecar:  # the serving program starts once the node has it
            sidecar.resolve("churn", "production", min_revision=moved["revision"], wait_ms=20000)

        port = free_port()
        log = walk.workdir / "serve.log"
        with open(log, "wb") as handle:
            serve = subprocess.Popen(
                [
                    *(sys.executable, str(EXAMPLE), "churn@production"),
                    *("--socket", str(up.socket), "--port", str(port)),
                    *("--cache-dir", str(walk.workdir / "cache")),
                ],
                cwd=walk.workdir,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        walk.background.append((serve, log))
        predict = f"http://127.0.0.1:{port}/predict"

        def serving(version: int) -> bool:
            return version == _post_json(predict, {"customer": 42})["version"]

        def wait_serving(version: int) -> None:
            try:
                wait_for(lambda: serving(version), timeout=30, what=f"serve.py on v{version}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- serve.py ---\n{log.read_text()}") from None

        wait_serving(v1)

        v2 = _publish(admin, approver, walk.workdir / "v2.bin", b"weights two")
        admin.set_alias("churn", "production", v2, expected=v1)
        wait_serving(v2)

        tampered = walk.workdir / "v3.bin"
        v3 = _publish(admin, approver, tampered, b"weights three")
        tampered.write_bytes(b"weights THREE")  # same size, other bytes
        admin.set_alias("churn", "production", v3, expected=v2)
        wait_for(lambda: f"refused churn v{v3}" in log.read_text(), timeout=30, what="refusal")
        assert serving(v2)
        assert not list((walk.workdir / "cache").glob(f"churn-v{v3}-*"))
        assert 0 == stop_process(serve)  # SIGTERM: a clean exit
