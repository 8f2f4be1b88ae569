"""``reg models create|list|show`` against a real central."""

from __future__ import annotations

import json

from tests.cli.conftest import Reg, one_line_error


class TestModelsCreate:
    def test_creates_a_model_with_description_owner_and_tags(self, reg: Reg) -> None:
        """A created model is stored with the given description, owner and tags."""
        result = reg(
            "models",
            "create",
            "fraud",
            "--description",
            "card fraud",
            "--owner",
            "risk",
            "--tag",
            "team=risk",
            "--tag",
            "tier=1",
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("created model fraud (revision ")
        model = reg.client().get_model("fraud")
        expected = ("card fraud", "risk", {"team": "risk", "tier": "1"})
        assert expected == (model["description"], model["owner"], model["tags"])

    def test_json_output_is_the_model_with_its_revision(self, reg: Reg) -> None:
        """``--json`` after the command prints the created record, revision included."""
        result = reg("models", "create", "fraud", "--json")
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert (record["name"], isinstance(record["revision"], int)) == ("fraud", True)

    def test_existing_name_is_a_conflict(self, reg: Reg) -> None:
        """Creating a model twice exits 4 with one line naming the problem."""
        assert reg("models", "create", "fraud").exit_code == 0
        result = reg("models", "create", "fraud")
        assert result.exit_code == 4
        assert "fraud" in one_line_error(result)

    def test_invalid_name_is_refused_as_usage(self, reg: Reg) -> None:
        """A name central refuses exits 2 with one line, and creates nothing."""
        result = reg("models", "create", "Bad Name")
        assert result.exit_code == 2
        one_line_error(result)
        assert reg.client().list_models()["items"] == []

    def test_bad_tag_is_a_usage_error(self, reg: Reg) -> None:
        """A ``--tag`` without ``=`` is rejected by the CLI before calling central."""
        result = reg("models", "create", "fraud", "--tag", "novalue")
        assert result.exit_code == 2
        assert "KEY=VALUE" in result.stderr
        assert reg.client().list_models()["items"] == []


class TestModelsList:
    def test_lists_models_as_a_table(self, reg: Reg) -> None:
        """Text output has a header and one row per model."""
        for name in ("fraud", "churn"):
            reg.client().create_model(name, owner="risk")
        result = reg("models", "list")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["NAME", "churn", "fraud"]

    def test_json_pages_with_prefix_and_limit(self, reg: Reg) -> None:
        """``--json`` parses; ``--limit`` pages and ``--page-token`` continues."""
        for name in ("fraud-a", "fraud-b", "fraud-c", "churn"):
            reg.client().create_model(name)
        first = json.loads(
            reg("models", "list", "--prefix", "fraud", "--limit", "2", "--json").stdout
        )
        token = first["next_page_token"]
        second = json.loads(
            reg(
                "models",
                "list",
                "--prefix",
                "fraud",
                "--limit",
                "2",
                "--page-token",
                token,
                "--json",
            ).stdout
        )
        names = [m["name"] for m in first["items"] + second["items"]]
        assert (names, second["next_page_token"]) == (["fraud-a", "fraud-b", "fraud-c"], None)

    def test_json_before_the_command_works_too(self, reg: Reg) -> None:
        """The global ``--json`` (before the command) is honoured as well."""
        reg.client().create_model("fraud")
        result = reg("models", "list", global_args=["--json"])
        assert [m["name"] for m in json.loads(result.stdout)["items"]] == ["fraud"]

    def test_limit_out_of_range_is_a_usage_error(self, reg: Reg) -> None:
        """``--limit 0`` exits 2."""
        assert reg("models", "list", "--limit", "0").exit_code == 2


class TestModelsShow:
    def test_shows_aliases_and_latest(self, reg: Reg) -> None:
        """The text view names the latest version and the aliases."""
        version = reg.seed_version("fraud")["version"]
        reg.client("deployer").set_alias("fraud", "staging", version)
        result = reg("models", "show", "fraud")
        assert result.exit_code == 0, result.output
        lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
        assert (
            lines["latest"].strip(),
            lines["aliases"].strip(),
        ) == ("fraud v1 (registered)", "staging=1")

    def test_empty_name_is_a_usage_error(self, reg: Reg) -> None:
        """An empty NAME exits 2 instead of reaching the list route."""
        result = reg("models", "show", "")
        assert result.exit_code == 2
        assert "empty" in one_line_error(result)

    def test_unknown_model_exits_3(self, reg: Reg) -> None:
        """Showing a model that does not exist exits 3 with one line."""
        result = reg("models", "show", "nope")
        assert result.exit_code == 3
        assert "nope" in one_line_error(result)
