"""The shortest real use of the whole stack, run with any installation of modelreg.

:func:`register_and_resolve` drives a running ``reg up`` as a user would, with the ``reg`` and
the ``python`` of one virtualenv: create a model, push a local file, approve it with a second
token, promote it to ``production``, and resolve it through ``from modelreg import Client``. The
installed-wheel test (``tests/test_package.py``) runs it against a wheel in a fresh virtualenv;
``tests/e2e/test_smoke.py`` runs it against this checkout, which is how the dependency-floor
check (``.ci/floors``) exercises the lowest versions ``pyproject.toml`` accepts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.stack import UpProc

__all__ = ["RESOLVE_PROGRAM", "register_and_resolve"]

#: What a serving process does at start-up: the top-level import, one resolve that waits for the
#: sidecar to hold the promotion's revision. Prints the answer as JSON.
RESOLVE_PROGRAM = """
import json, sys
from modelreg import Client

with Client(sys.argv[1]) as registry:
    model = registry.resolve("churn", "production", min_revision=int(sys.argv[2]), wait_ms=30000)
print(json.dumps({"version": model.version, "sha256": model.sha256, "uri": model.artifact_uri}))
"""


def _run(argv: list[str], up: UpProc, bin_dir: Path) -> str:
    done = subprocess.run(
        argv, cwd=up.workdir, env=up.env(bin_dir), capture_output=True, text=True, timeout=120
    )
    assert 0 == done.returncode, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def register_and_resolve(up: UpProc, bin_dir: Path) -> dict[str, object]:
    """Push, approve, promote and resolve ``churn`` on ``up``; returns the resolved answer.

    Raises AssertionError (with the command's output) when any step fails.
    """
    reg = str(bin_dir / "reg")
    artifact = up.workdir / "churn-v1.bin"
    artifact.write_bytes(b"churn weights, version 1\n")
    _run([reg, "models", "create", "churn", "--owner", "growth"], up, bin_dir)
    _run([reg, "push", "churn", "--artifact", str(artifact), "--metric", "auc=0.87"], up, bin_dir)
    created = _run([reg, "token", "create", "alice", "--role", "approver"], up, bin_dir)
    alice = created.strip().splitlines()[-1]
    _run([reg, "--token", alice, "approve", "churn", "1", "--comment", "ok"], up, bin_dir)
    moved = _run(
        [reg, "--json", "promote", "churn", "1", "--to", "production", "--reason", "smoke"],
        up,
        bin_dir,
    )
    revision = json.loads(moved)["revision"]
    answer = _run(
        [str(bin_dir / "python"), "-c", RESOLVE_PROGRAM, str(up.socket), str(revision)],
        up,
        bin_dir,
    )
    resolved: dict[str, object] = json.loads(answer)
    return resolved
