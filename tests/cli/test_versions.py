"""``reg push|approve|reject|archive|search`` against a real central."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.cli.conftest import Reg, one_line_error

SHA = "ab" * 32


@pytest.fixture
def fraud(reg: Reg) -> Reg:
    """``reg`` with an empty model ``fraud``."""
    reg.client().create_model("fraud")
    return reg


class TestPush:
    def test_local_file_is_hashed_and_registered_as_file_uri(
        self, fraud: Reg, tmp_path: Path
    ) -> None:
        """A local path is registered as file://<abs path> with its sha256 and size."""
        artifact = tmp_path / "model.onnx"
        artifact.write_bytes(b"weights" * 1000)
        result = fraud("push", "fraud", "--artifact", str(artifact), "--format", "onnx", "--json")
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        expected = {
            "uri": artifact.resolve().as_uri(),
            "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
            "size": 7000,
            "format": "onnx",
        }
        assert expected == record["artifact"]
        assert expected == fraud.client().get_version("fraud", 1)["artifact"]

    def test_lineage_params_metrics_and_tags(self, fraud: Reg) -> None:
        """Every flag lands in the record; metrics are numbers, params stay strings."""
        result = fraud(
            "push", "fraud", "--artifact", "s3://models/fraud/1", "--sha256", SHA,
            "--run-id", "run-42", "--commit", "abc123", "--dataset", "s3://data/train",
            "--dataset-digest", "d" * 64, "--param", "lr=0.01", "--metric", "auc=0.93",
            "--metric", "epochs=3", "--tag", "team=risk", "--description", "first",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("registered fraud v1 (s3://models/fraud/1, revision ")
        record = fraud.client().get_version("fraud", 1)
        expected = (
            {"run_id": "run-42", "commit": "abc123", "dataset_uri": "s3://data/train",
             "dataset_digest": "d" * 64, "parent_version": None},
            {"lr": "0.01"},
            {"auc": 0.93, "epochs": 3},
            {"team": "risk"},
            "first",
        )  # fmt: skip
        actual = (
            record["lineage"],
            record["params"],
            record["metrics"],
            record["tags"],
            record["description"],
        )
        assert expected == actual

    def test_retry_with_the_same_idempotency_key_registers_once(self, fraud: Reg) -> None:
        """A repeated push with the same key answers the existing version."""
        args = ("push", "fraud", "--artifact", "s3://m/1", "--sha256", SHA,
                "--idempotency-key", "job-7")  # fmt: skip
        first, second = fraud(*args), fraud(*args)
        assert (first.exit_code, second.exit_code) == (0, 0)
        assert second.stdout.startswith("already registered (same push), kept fraud v1")
        assert len(fraud.client().list_versions("fraud")["items"]) == 1

    def test_uri_without_sha256_is_a_usage_error(self, fraud: Reg) -> None:
        """A remote URI needs ``--sha256``: exit 2, nothing registered."""
        result = fraud("push", "fraud", "--artifact", "s3://m/1")
        assert result.exit_code == 2
        assert "--sha256" in result.stderr
        assert fraud.client().list_versions("fraud")["items"] == []

    def test_missing_local_file_is_a_usage_error(self, fraud: Reg, tmp_path: Path) -> None:
        """A path that does not exist exits 2 naming it."""
        result = fraud("push", "fraud", "--artifact", str(tmp_path / "nope.onnx"))
        assert result.exit_code == 2
        assert "nope.onnx" in result.stderr

    def test_sha256_that_does_not_match_the_file_is_refused(
        self, fraud: Reg, tmp_path: Path
    ) -> None:
        """``--sha256`` given with a local file must match it: exit 1, nothing registered."""
        artifact = tmp_path / "model.bin"
        artifact.write_bytes(b"x")
        result = fraud("push", "fraud", "--artifact", str(artifact), "--sha256", SHA)
        assert result.exit_code == 1
        assert "does not match" in one_line_error(result)
        assert fraud.client().list_versions("fraud")["items"] == []

    def test_metric_that_is_not_a_number_is_a_usage_error(self, fraud: Reg) -> None:
        """``--metric auc=high`` exits 2 before calling central."""
        result = fraud("push", "fraud", "--artifact", "s3://m/1", "--sha256", SHA,
                       "--metric", "auc=high")  # fmt: skip
        assert result.exit_code == 2
        assert "expected a number" in result.stderr

    def test_invalid_digest_is_refused_by_central(self, fraud: Reg) -> None:
        """A sha256 that is not 64 hex digits exits 2 with central's one-line message."""
        result = fraud("push", "fraud", "--artifact", "s3://m/1", "--sha256", "xyz")
        assert result.exit_code == 2
        one_line_error(result)

    def test_unknown_model_exits_3(self, reg: Reg) -> None:
        """Pushing to a model that does not exist exits 3."""
        result = reg("push", "nope", "--artifact", "s3://m/1", "--sha256", SHA)
        assert result.exit_code == 3
        assert "nope" in one_line_error(result)


class TestDecisions:
    def test_approver_approves_with_a_comment(self, reg: Reg) -> None:
        """``reg approve`` by another token records approved, who and the comment."""
        reg.seed_version()
        result = reg("approve", "fraud", "1", "--comment", "eval passed", token="approver")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("approved fraud v1 (revision ")
        decision = reg.client().get_version("fraud", 1)["decision"]
        assert (
            decision["status"],
            decision["by"],
            decision["comment"],
        ) == ("approved", "approver", "eval passed")

    def test_registrant_cannot_approve_own_version(self, reg: Reg) -> None:
        """Four eyes: the admin who registered v1 cannot approve it (exit 4)."""
        reg.seed_version()
        result = reg("approve", "fraud", "1")
        assert result.exit_code == 4
        one_line_error(result)
        assert reg.client().get_version("fraud", 1)["status"] == "registered"

    def test_reject_then_approve_is_an_invalid_transition(self, reg: Reg) -> None:
        """A rejected version cannot be approved: exit 4."""
        reg.seed_version()
        assert reg("reject", "fraud", "1", "--comment", "bias", token="approver").exit_code == 0
        result = reg("approve", "fraud", "1", token="approver")
        assert result.exit_code == 4
        assert reg.client().get_version("fraud", 1)["status"] == "rejected"

    def test_reader_may_not_approve(self, reg: Reg) -> None:
        """A reader token gets permission denied: exit 4."""
        reg.seed_version()
        result = reg("approve", "fraud", "1", token="reader")
        assert result.exit_code == 4
        one_line_error(result)

    def test_unknown_version_exits_3(self, reg: Reg) -> None:
        """Approving a version that does not exist exits 3."""
        reg.seed_version()
        result = reg("approve", "fraud", "9", token="approver")
        assert result.exit_code == 3
        one_line_error(result)

    def test_version_must_be_a_positive_number(self, reg: Reg) -> None:
        """``reg approve fraud x`` is a usage error."""
        assert reg("approve", "fraud", "x", token="approver").exit_code == 2


class TestArchive:
    def test_archives_with_reason(self, reg: Reg) -> None:
        """``reg archive`` records the reason; the version is no longer latest."""
        reg.seed_version()
        result = reg("archive", "fraud", "1", "--reason", "superseded", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["archived"]["reason"] == "superseded"
        assert reg.client().get_model("fraud")["latest"] is None

    def test_version_held_by_an_alias_cannot_be_archived(self, reg: Reg) -> None:
        """Archiving the target of an alias exits 4 and changes nothing."""
        reg.seed_version()
        reg.client().set_alias("fraud", "staging", 1)
        result = reg("archive", "fraud", "1")
        assert result.exit_code == 4
        one_line_error(result)
        assert reg.client().get_version("fraud", 1)["archived"] is None


class TestSearch:
    def test_filters_by_status_and_model(self, reg: Reg) -> None:
        """Only the approved version of ``fraud`` is found."""
        reg.seed_version("fraud", "a" * 64, approve=True)
        reg.seed_version("fraud", "b" * 64)
        reg.seed_version("churn", "c" * 64, approve=True)
        result = reg("search", "--model", "fraud", "--status", "approved", "--json")
        assert result.exit_code == 0, result.output
        found = [(v["model"], v["version"]) for v in json.loads(result.stdout)["items"]]
        assert found == [("fraud", 1)]

    def test_filters_by_tag_as_text(self, reg: Reg) -> None:
        """``--tag`` matches version tags; the text output is a table."""
        reg.client().create_model("fraud")
        reg.client().register_version("fraud", "s3://m/1", "a" * 64, tags={"team": "risk"})
        reg.client().register_version("fraud", "s3://m/2", "b" * 64, tags={"team": "ops"})
        result = reg("search", "--tag", "team=risk")
        assert result.exit_code == 0, result.output
        rows = [line.split()[:2] for line in result.stdout.splitlines()]
        assert rows == [["MODEL", "VERSION"], ["fraud", "1"]]

    def test_bad_time_is_a_usage_error(self, reg: Reg) -> None:
        """``--since`` must be an RFC 3339 time."""
        result = reg("search", "--since", "yesterday")
        assert result.exit_code == 2
        assert "RFC 3339" in result.stderr
