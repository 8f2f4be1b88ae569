"""Shared fixtures: a moto S3 server, a central process, and the file/S3 replica parametrisation.

The process helpers themselves live in ``tests/procs.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import CentralProc, MotoProc, start_central, start_moto

#: The bucket every ``moto`` fixture creates.
BUCKET = "modelreg"
#: This machine's CA bundle: litestream must receive it as SSL_CERT_FILE, not AWS_CA_BUNDLE.
CA_BUNDLE = os.environ.get("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoProc]:
    """A fresh moto_server with bucket ``modelreg``; AWS credentials, region and CA bundle set."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CA_BUNDLE", CA_BUNDLE)
    # A short writer lease: a central taking a fresh prefix waits a third of it plus a second.
    monkeypatch.setenv("REG_S3_LEASE_TTL_S", "3")
    server = start_moto()
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.close()


def s3_replica_url(moto: MotoProc, prefix: str | None = None) -> str:
    """A base replica URL in the moto bucket under a unique prefix."""
    prefix = prefix or f"central-{uuid.uuid4().hex[:8]}"
    return f"s3://{BUCKET}/{prefix}?endpoint={moto.endpoint}&region=us-east-1&forcePathStyle=true"


@pytest.fixture(params=["file", "s3"])
def replica_kind(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A base replica URL: a directory (``file``) or a moto bucket prefix (``s3``)."""
    if request.param == "file":
        return f"file://{tmp_path / 'replica'}"
    server: MotoProc = request.getfixturevalue("moto")
    return s3_replica_url(server)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralProc]:
    """A started central on a free port with its default file:// replica (``<data>/replica``)."""
    proc = start_central(tmp_path / "central")
    try:
        yield proc
    finally:
        proc.stop()
