"""modelreg.objectstore against a real moto_server and a directory: one URL form, one library."""

from __future__ import annotations

from pathlib import Path

import obstore
import pytest
from obstore.exceptions import AlreadyExistsError, NotModifiedError, PreconditionError

from modelreg.errors import InvalidURI
from modelreg.objectstore import open_store, split_url
from tests.conftest import BUCKET, CA_BUNDLE
from tests.procs import MotoProc


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    moto: MotoProc = request.getfixturevalue("moto")
    return f"s3://{BUCKET}/a/prefix?endpoint={moto.endpoint}&region=us-east-1&forcePathStyle=true"


class TestURLs:
    @pytest.mark.parametrize(
        "url",
        [
            "ftp://host/x",
            "s3://key:secret@bucket/prefix",
            "https://user:pass@host/x",
            "file://relative/path",
            "file:",
            "s3:///no-bucket",
        ],
    )
    def test_bad_urls_are_refused(self, url: str) -> None:
        """Unknown schemes, credentials in the URL, relative file paths, a missing bucket."""
        with pytest.raises(InvalidURI):
            open_store(url)

    def test_the_replica_query_keys_are_read(self) -> None:
        """The same query keys as a replica URL."""
        scheme, bucket, prefix, query = split_url(
            "s3://b/p/q/?endpoint=http://127.0.0.1:9&region=eu-west-1&forcePathStyle=true"
        )
        assert ("s3", "b", "p/q") == (scheme, bucket, prefix)
        assert {"endpoint": "http://127.0.0.1:9", "region": "eu-west-1"} == {
            k: query[k] for k in ("endpoint", "region")
        }


@pytest.mark.integration
class TestStore:
    def test_put_get_head_list(self, store_url: str) -> None:
        """Bytes written under the prefix come back, with their size, and are listed."""
        store = open_store(store_url)
        obstore.put(store, "ltx/0/1-1.ltx", b"hello")
        assert b"hello" == bytes(obstore.get(store, "ltx/0/1-1.ltx").bytes())
        assert 5 == obstore.head(store, "ltx/0/1-1.ltx")["size"]
        listed = [meta["path"] for batch in obstore.list(store, "ltx") for meta in batch]
        assert ["ltx/0/1-1.ltx"] == listed

    def test_ca_bundle_is_the_root_certificate(self, store_url: str) -> None:
        """With AWS_CA_BUNDLE set (this machine sets it) the store still works: the bundle's PEM
        text, not its path, becomes the root certificate."""
        store = open_store(store_url, {"AWS_CA_BUNDLE": CA_BUNDLE})
        obstore.put(store, "bundle/x", b"ok")
        assert b"ok" == bytes(obstore.get(store, "bundle/x").bytes())

    def test_conditional_writes(self, store_url: str) -> None:
        """Create-if-absent lets exactly one writer win; an update needs the current e-tag (S3
        only: a directory takes create-if-absent but not e-tag updates, so a ``file://`` writer
        lock is a ``flock``)."""
        if store_url.startswith("file:"):
            with pytest.raises(NotImplementedError):
                obstore.put(open_store(store_url), "x", b"", mode={"e_tag": "*"})
            return
        store = open_store(store_url)
        first = obstore.put(store, "lease", b"a", mode="create")
        with pytest.raises(AlreadyExistsError):
            obstore.put(store, "lease", b"b", mode="create")
        second = obstore.put(store, "lease", b"c", mode={"e_tag": first["e_tag"]})
        with pytest.raises(PreconditionError):
            obstore.put(store, "lease", b"d", mode={"e_tag": first["e_tag"]})
        assert b"c" == bytes(obstore.get(store, "lease").bytes())
        assert first["e_tag"] != second["e_tag"]

    def test_conditional_get(self, store_url: str) -> None:
        """A GET with the current e-tag answers "not modified" (what a cheap poll needs)."""
        store = open_store(store_url)
        written = obstore.put(store, "announce", b"{}")
        with pytest.raises(NotModifiedError):
            obstore.get(store, "announce", options={"if_none_match": written["e_tag"]})
