"""``reg up --demo``: an example model with a few versions, an approval and a ``production`` alias.

Idempotent, so that ``reg up --demo`` can be run on every start: each step first looks at what
is there and writes only what is missing (the model is created once, versions are pushed with
an idempotency key, an approved version is not approved again, an alias that exists is never
moved). A second run therefore leaves the registry revision unchanged.

Four eyes: the versions are registered with the admin token and approved with a second token
(``demo-approver``, role approver), as central requires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelreg.central.client import CentralClient
from modelreg.errors import AliasConflict, AliasNotFound, AlreadyExists, RegistryError
from modelreg.sidecar.client import Client

if TYPE_CHECKING:
    from modelreg.cli.up import Layout

__all__ = ["DEMO_MODEL", "run_demo"]

DEMO_MODEL = "fraud"
DEMO_APPROVER = "demo-approver"
#: Versions pushed: (metrics, params) each; the second is approved and becomes production.
_VERSIONS: tuple[tuple[dict[str, float], dict[str, int]], ...] = (
    ({"auc": 0.91, "precision": 0.82}, {"max_depth": 4, "n_estimators": 200}),
    ({"auc": 0.93, "precision": 0.85}, {"max_depth": 6, "n_estimators": 300}),
    ({"auc": 0.94, "precision": 0.84}, {"max_depth": 8, "n_estimators": 400}),
)
_APPROVED = 2
_STAGING = 3
#: Milliseconds the sidecar may take to follow the demo's last write.
_SIDECAR_WAIT_MS = 15000


def _artifact(directory: Path, number: int) -> tuple[Path, str, int]:
    """Write (once) the demo artifact of version ``number``; return path, sha256, size."""
    path = directory / f"{DEMO_MODEL}-v{number}.bin"
    content = f"modelreg demo artifact: {DEMO_MODEL} version {number}\n".encode() * 64
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest(), len(content)


def _approver_client(admin: CentralClient) -> CentralClient:
    """A client with a fresh ``demo-approver`` token (its secret is shown only at creation)."""
    try:
        created = admin.create_token(DEMO_APPROVER, "approver")
    except AlreadyExists:
        admin.revoke_token(DEMO_APPROVER)
        created = admin.create_token(DEMO_APPROVER, "approver")
    return CentralClient(admin.url, token=str(created["secret"]), timeout=admin.timeout)


def _ensure_alias(
    admin: CentralClient, alias: str, version: int, say: Callable[[str], None]
) -> None:
    try:
        current = admin.get_alias(DEMO_MODEL, alias)
    except AliasNotFound:
        try:
            admin.set_alias(DEMO_MODEL, alias, version, expected=None, reason="reg up --demo")
        except AliasConflict:
            say(f"demo: {DEMO_MODEL}@{alias} was set meanwhile; left as it is")
            return
        say(f"demo: {DEMO_MODEL}@{alias} -> version {version}")
        return
    say(f"demo: {DEMO_MODEL}@{alias} already points at version {current['version']}; left as is")


def run_demo(layout: Layout, say: Callable[[str], None]) -> str:
    """Bring the demo model to its state at central, wait for the sidecar; return the model.

    Raises :class:`modelreg.cli.up.StackError` when central refuses a step (the message says which).
    """
    from modelreg.cli.up import StackError

    try:
        token = layout.admin_token_file.read_text().strip()
    except OSError as exc:
        raise StackError(f"demo: cannot read the admin token: {exc}") from None
    admin = CentralClient(layout.central_url, token=token)
    artifacts = layout.data_dir / "demo"
    artifacts.mkdir(exist_ok=True)
    try:
        _populate(admin, artifacts, say)
        revision = int(admin.health()["revision"])
        with Client(layout.socket) as sidecar:
            answer = sidecar.resolve(
                DEMO_MODEL, "production", min_revision=revision, wait_ms=_SIDECAR_WAIT_MS
            )
    except RegistryError as exc:
        raise StackError(f"demo: {type(exc).__name__}: {exc.message}") from None
    say(
        f"demo: the sidecar resolves {DEMO_MODEL}@production -> version {answer.version} "
        f"({answer.artifact_uri}) at revision {answer.revision}"
    )
    return DEMO_MODEL


def _populate(admin: CentralClient, artifacts: Path, say: Callable[[str], None]) -> None:
    try:
        admin.create_model(
            DEMO_MODEL,
            description="Example card-fraud scorer registered by reg up --demo",
            owner="risk-team",
            tags={"demo": "true"},
        )
        say(f"demo: created model {DEMO_MODEL}")
    except AlreadyExists:
        say(f"demo: model {DEMO_MODEL} exists")
    numbers: list[int] = []
    for index, (metrics, params) in enumerate(_VERSIONS, start=1):
        path, sha256, size = _artifact(artifacts, index)
        fields: dict[str, Any] = {
            "size": size,
            "format": "bin",
            "run_id": f"demo-run-{index}",
            "commit": f"{index:07x}",
            "dataset_uri": "file:///datasets/transactions-2026-11.parquet",
            "metrics": metrics,
            "params": params,
            "description": f"demo version {index}",
            "idempotency_key": f"reg-up-demo-{DEMO_MODEL}-{index}",
        }
        if numbers:
            fields["parent_version"] = numbers[-1]
        record, created = admin.push(DEMO_MODEL, path.resolve().as_uri(), sha256, **fields)
        numbers.append(int(record["version"]))
        say(f"demo: version {record['version']} {'registered' if created else 'is there'}")
    approved = numbers[_APPROVED - 1]
    status = admin.get_version(DEMO_MODEL, approved)["status"]
    if status == "registered":
        approver = _approver_client(admin)
        approver.approve(DEMO_MODEL, approved, comment="offline eval passed (demo)")
        say(f"demo: version {approved} approved by {DEMO_APPROVER} (four eyes)")
    else:
        say(f"demo: version {approved} is {status}")
    if status in ("registered", "approved"):
        _ensure_alias(admin, "production", approved, say)
    _ensure_alias(admin, "staging", numbers[_STAGING - 1], say)
