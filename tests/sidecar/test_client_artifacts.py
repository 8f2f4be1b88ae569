"""fetch_artifact: verified copies of file:// and http:// artifacts, nothing left on a mismatch."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelreg.errors import (
    ArtifactDigestMismatch,
    InvalidDigest,
    InvalidURI,
    NotFound,
    Unavailable,
)
from modelreg.sidecar.artifacts import fetch_artifact
from modelreg.sidecar.client import ResolvedModel

PAYLOAD = b"model weights \x00\x01\x02" * 4096
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
OTHER_DIGEST = hashlib.sha256(b"something else").hexdigest()

ServerFactory = Callable[..., Awaitable[TestServer]]


def record(uri: str, sha256: str = DIGEST, size: int | None = None) -> dict[str, Any]:
    """A version record as central and the sidecar send it."""
    return {
        "model": "fraud",
        "version": 1,
        "status": "approved",
        "artifact": {"uri": uri, "sha256": sha256, "size": size, "format": "onnx"},
    }


def leftovers(directory: Path) -> list[str]:
    """Names in ``directory`` (temp files included)."""
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    """A source artifact file holding PAYLOAD."""
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty destination directory."""
    out = tmp_path / "out"
    out.mkdir()
    return out


class TestFileArtifacts:
    def test_copies_a_matching_file(self, artifact: Path, out_dir: Path) -> None:
        """A file:// artifact whose digest matches is copied to dest and its path returned."""
        dest = out_dir / "fraud.onnx"
        written = fetch_artifact(record(artifact.as_uri(), size=len(PAYLOAD)), dest)
        assert dest == written
        assert dest.read_bytes() == PAYLOAD
        assert leftovers(out_dir) == ["fraud.onnx"]

    def test_directory_dest_takes_the_uri_file_name(self, artifact: Path, out_dir: Path) -> None:
        """An existing directory as dest receives the file under the URI's last segment."""
        written = fetch_artifact(record(artifact.as_uri()), out_dir)
        assert out_dir / "model.onnx" == written
        assert written.read_bytes() == PAYLOAD

    def test_mismatch_raises_and_leaves_nothing(self, artifact: Path, out_dir: Path) -> None:
        """A digest mismatch raises ArtifactDigestMismatch and leaves no file at all."""
        dest = out_dir / "fraud.onnx"
        with pytest.raises(ArtifactDigestMismatch) as caught:
            fetch_artifact(record(artifact.as_uri(), sha256=OTHER_DIGEST), dest)
        assert (caught.value.expected, caught.value.actual) == (OTHER_DIGEST, DIGEST)
        assert caught.value.code == "digest_mismatch"
        assert leftovers(out_dir) == []

    def test_mismatch_keeps_an_existing_dest(self, artifact: Path, out_dir: Path) -> None:
        """A mismatch never overwrites a file already at dest."""
        dest = out_dir / "fraud.onnx"
        dest.write_bytes(b"the previous, verified model")
        with pytest.raises(ArtifactDigestMismatch):
            fetch_artifact(record(artifact.as_uri(), sha256=OTHER_DIGEST), dest)
        assert dest.read_bytes() == b"the previous, verified model"
        assert leftovers(out_dir) == ["fraud.onnx"]

    def test_size_mismatch_is_refused(self, artifact: Path, out_dir: Path) -> None:
        """A record whose size differs from the bytes read is refused like a digest mismatch."""
        with pytest.raises(ArtifactDigestMismatch):
            fetch_artifact(record(artifact.as_uri(), size=len(PAYLOAD) + 1), out_dir / "m")
        assert leftovers(out_dir) == []

    def test_missing_file_is_not_found(self, tmp_path: Path, out_dir: Path) -> None:
        """A file:// URI naming no file raises NotFound."""
        with pytest.raises(NotFound):
            fetch_artifact(record((tmp_path / "absent.onnx").as_uri()), out_dir / "m")
        assert leftovers(out_dir) == []

    def test_failure_creates_no_directory(self, tmp_path: Path, out_dir: Path) -> None:
        """A source that cannot be opened leaves not even the destination's directory."""
        with pytest.raises(NotFound):
            fetch_artifact(record((tmp_path / "absent.onnx").as_uri()), out_dir / "new" / "m")
        assert leftovers(out_dir) == []

    def test_accepts_a_resolved_model(self, artifact: Path, out_dir: Path) -> None:
        """The typed record the client returns is accepted as well as a dict."""
        answer = {"ok": True, "result": record(artifact.as_uri()), "revision": 3, "age_ms": 5}
        answer["result"]["ref"] = "production"
        resolved = ResolvedModel.from_answer(answer)
        written = fetch_artifact(resolved, out_dir / "fraud.onnx")
        assert written.read_bytes() == PAYLOAD


class TestRefusedRecords:
    def test_unsupported_scheme(self, out_dir: Path) -> None:
        """A scheme it cannot copy (s3://) raises InvalidURI naming the supported ones."""
        with pytest.raises(InvalidURI) as caught:
            fetch_artifact(record("s3://bucket/model.onnx"), out_dir / "m")
        assert "file://" in caught.value.message
        assert leftovers(out_dir) == []

    def test_malformed_sha256(self, artifact: Path, out_dir: Path) -> None:
        """A record whose sha256 is not 64 lowercase hex digits raises InvalidDigest."""
        with pytest.raises(InvalidDigest):
            fetch_artifact(record(artifact.as_uri(), sha256=DIGEST.upper()), out_dir / "m")


async def artifact_server(aiohttp_server: ServerFactory) -> TestServer:
    """An aiohttp server on 127.0.0.1 serving PAYLOAD at /model.onnx."""

    async def model(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(PAYLOAD)
        await response.prepare(request)
        for start in range(0, len(PAYLOAD), 8192):
            await response.write(PAYLOAD[start : start + 8192])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/model.onnx", model)
    return await aiohttp_server(app, host="127.0.0.1")


class TestHttpArtifacts:
    async def test_copies_a_matching_http_artifact(
        self, aiohttp_server: ServerFactory, out_dir: Path
    ) -> None:
        """An http:// artifact is streamed, verified and written."""
        server = await artifact_server(aiohttp_server)
        uri = str(server.make_url("/model.onnx"))
        written = await asyncio.to_thread(fetch_artifact, record(uri), out_dir / "fraud.onnx")
        assert written.read_bytes() == PAYLOAD
        assert leftovers(out_dir) == ["fraud.onnx"]

    async def test_http_mismatch_leaves_nothing(
        self, aiohttp_server: ServerFactory, out_dir: Path
    ) -> None:
        """An http:// artifact with another digest raises and leaves no file."""
        server = await artifact_server(aiohttp_server)
        uri = str(server.make_url("/model.onnx"))
        with pytest.raises(ArtifactDigestMismatch):
            await asyncio.to_thread(
                fetch_artifact, record(uri, sha256=OTHER_DIGEST), out_dir / "fraud.onnx"
            )
        assert leftovers(out_dir) == []

    async def test_http_404_is_not_found(
        self, aiohttp_server: ServerFactory, out_dir: Path
    ) -> None:
        """An HTTP 404 raises NotFound."""
        server = await artifact_server(aiohttp_server)
        uri = str(server.make_url("/absent.onnx"))
        with pytest.raises(NotFound):
            await asyncio.to_thread(fetch_artifact, record(uri), out_dir / "m")
        assert leftovers(out_dir) == []

    async def test_unreachable_server_is_unavailable(self, out_dir: Path) -> None:
        """A server nobody listens on raises Unavailable."""
        from tests.procs import free_port

        uri = f"http://127.0.0.1:{free_port()}/model.onnx"
        with pytest.raises(Unavailable):
            await asyncio.to_thread(fetch_artifact, record(uri), out_dir / "m", timeout_s=5.0)
        assert leftovers(out_dir) == []
