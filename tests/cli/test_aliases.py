"""``reg promote|rollback|history`` against a real central."""

from __future__ import annotations

import json

import pytest

from modelreg.central.records import now
from tests.cli.conftest import Reg, one_line_error


@pytest.fixture
def approved(reg: Reg) -> Reg:
    """``fraud`` with versions 1 and 2 approved and version 3 only registered."""
    reg.seed_version("fraud", "a" * 64, approve=True)
    reg.seed_version("fraud", "b" * 64, approve=True)
    reg.seed_version("fraud", "c" * 64)
    return reg


class TestPromote:
    def test_moves_an_alias_and_prints_the_move(self, approved: Reg) -> None:
        """``reg promote`` prints from -> to with the revision."""
        result = approved("promote", "fraud", "1", "--to", "production", token="deployer")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("fraud@production: (unset) -> v1 (revision ")
        assert approved.client().get_alias("fraud", "production")["version"] == 1

    def test_expected_matching_moves_and_json_parses(self, approved: Reg) -> None:
        """``--expected N`` that matches moves the alias; ``--json`` is the move record."""
        approved.client("deployer").set_alias("fraud", "production", 1)
        result = approved("promote", "fraud", "2", "--to", "production", "--expected", "1",
                          "--reason", "better auc", "--json", token="deployer")  # fmt: skip
        assert result.exit_code == 0, result.output
        move = json.loads(result.stdout)
        expected = (1, 2, "deployer", "better auc", "set")
        assert expected == (
            move["from_version"],
            move["to_version"],
            move["actor"],
            move["reason"],
            move["action"],
        )

    def test_expected_mismatch_is_a_conflict_and_moves_nothing(self, approved: Reg) -> None:
        """A compare-and-set on a stale belief exits 4; the alias stays put."""
        approved.client("deployer").set_alias("fraud", "production", 2)
        result = approved("promote", "fraud", "1", "--to", "production", "--expected", "1",
                          token="deployer")  # fmt: skip
        assert result.exit_code == 4
        one_line_error(result)
        assert approved.client().get_alias("fraud", "production")["version"] == 2

    def test_expected_none_requires_the_alias_unset(self, approved: Reg) -> None:
        """``--expected none`` succeeds once, then conflicts."""
        args = ("promote", "fraud", "1", "--to", "staging", "--expected", "none")
        assert approved(*args).exit_code == 0
        assert approved(*args).exit_code == 4

    def test_bad_expected_is_a_usage_error(self, approved: Reg) -> None:
        """``--expected`` takes a number or none."""
        result = approved("promote", "fraud", "1", "--to", "staging", "--expected", "two")
        assert result.exit_code == 2

    def test_unapproved_version_cannot_go_to_production(self, approved: Reg) -> None:
        """The protected alias refuses a registered-only version: exit 4."""
        result = approved("promote", "fraud", "3", "--to", "production", token="deployer")
        assert result.exit_code == 4
        one_line_error(result)

    def test_publisher_cannot_move_a_protected_alias(self, approved: Reg) -> None:
        """Only deployers move production: a publisher gets exit 4."""
        result = approved("promote", "fraud", "1", "--to", "production", token="publisher")
        assert result.exit_code == 4

    def test_unknown_version_exits_3(self, approved: Reg) -> None:
        """Promoting a version that does not exist exits 3."""
        result = approved("promote", "fraud", "42", "--to", "staging")
        assert result.exit_code == 3


class TestRollback:
    def test_rolls_back_to_the_previous_target(self, approved: Reg) -> None:
        """After 1 -> 2, rollback points production at 1 again."""
        deployer = approved.client("deployer")
        deployer.set_alias("fraud", "production", 1)
        deployer.set_alias("fraud", "production", 2)
        result = approved("rollback", "fraud", "production", "--reason", "regression",
                          token="deployer")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("fraud@production: v2 -> v1 (revision ")
        assert approved.client().get_alias("fraud", "production")["version"] == 1

    def test_nothing_to_roll_back_is_a_conflict(self, approved: Reg) -> None:
        """An alias with a single move has nothing to roll back to: exit 4."""
        approved.client().set_alias("fraud", "staging", 1)
        result = approved("rollback", "fraud", "staging")
        assert result.exit_code == 4
        one_line_error(result)

    def test_unknown_alias_exits_3(self, approved: Reg) -> None:
        """Rolling back an alias that was never set exits 3."""
        assert approved("rollback", "fraud", "canary").exit_code == 3


class TestHistory:
    def test_lists_every_move_newest_first(self, approved: Reg) -> None:
        """``reg history MODEL ALIAS --json`` has every move, newest first."""
        admin = approved.client()
        for version in (1, 2, 3):
            admin.set_alias("fraud", "staging", version, reason=f"try {version}")
        result = approved("history", "fraud", "staging", "--json")
        assert result.exit_code == 0, result.output
        moves = [(m["from_version"], m["to_version"]) for m in json.loads(result.stdout)["items"]]
        assert moves == [(2, 3), (1, 2), (None, 1)]

    def test_without_alias_merges_every_alias(self, approved: Reg) -> None:
        """``reg history MODEL`` shows the moves of all current aliases as a table."""
        admin = approved.client()
        admin.set_alias("fraud", "staging", 3)
        admin.set_alias("fraud", "canary", 2)
        result = approved("history", "fraud")
        assert result.exit_code == 0, result.output
        rows = [line.split()[1] for line in result.stdout.splitlines()]
        assert rows == ["ALIAS", "canary", "staging"]

    def test_at_answers_what_the_alias_pointed_at_then(self, approved: Reg) -> None:
        """``--at`` a time between two moves names the earlier target."""
        admin = approved.client()
        admin.set_alias("fraud", "staging", 1)
        between = now()
        admin.set_alias("fraud", "staging", 2)
        result = approved("history", "fraud", "staging", "--at", between)
        assert result.exit_code == 0, result.output
        assert f"fraud@staging at {between}: v1" == result.stdout.strip()

    def test_unknown_model_exits_3(self, reg: Reg) -> None:
        """History of a model that does not exist exits 3."""
        result = reg("history", "nope")
        assert result.exit_code == 3
        one_line_error(result)
