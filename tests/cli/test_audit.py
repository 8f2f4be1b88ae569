"""``reg events`` and ``reg audit verify`` against a real central."""

from __future__ import annotations

import json
import sqlite3

from tests.cli.conftest import Reg, one_line_error


class TestEvents:
    def test_lists_events_after_a_revision(self, reg: Reg) -> None:
        """``--after`` skips older events; ``--json`` parses and is hash-chained."""
        start = reg.client().health()["revision"]
        reg.seed_version()
        result = reg("events", "--after", str(start), "--json")
        assert result.exit_code == 0, result.output
        items = json.loads(result.stdout)["items"]
        assert [start + 1, start + 2] == [e["revision"] for e in items]
        assert items[0]["hash"] == items[1]["prev_hash"]

    def test_text_is_a_table_and_says_how_to_continue(self, reg: Reg) -> None:
        """With more events than ``--limit``, stderr says which ``--after`` continues."""
        reg.seed_version()
        result = reg("events", "--limit", "1")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0].split()[:2] == ["REVISION", "AT"]
        assert result.stderr.strip() == "more: add --after 1"

    def test_the_hint_names_the_last_revision_looked_at(self, reg: Reg) -> None:
        """With a filter the hint continues after the last event examined, not matched."""
        reg.seed_version("fraud")
        reg.seed_version("churn")
        reg.seed_version("fraud")
        result = reg("events", "--model", "fraud", "--limit", "1")
        revision = json.loads(reg("events", "--json", "--model", "fraud").stdout)["items"][0]
        assert result.stderr.strip() == f"more: add --after {revision['revision']}"

    def test_a_scoped_token_reads_only_its_models_events(self, reg: Reg) -> None:
        """A token scoped to ``fraud*`` sees the events of those models only."""
        secret = reg.client().create_token("scoped", "reader", ["fraud*"])["secret"]
        reg.tokens["scoped"] = secret
        reg.seed_version("churn")
        reg.seed_version("fraud")
        result = reg("events", "--json", token="scoped")
        assert result.exit_code == 0, result.output
        subjects = [e["subject"] for e in json.loads(result.stdout)["items"]]
        assert ["fraud", "fraud/1"] == subjects

    def test_filters_by_model_and_action(self, reg: Reg) -> None:
        """``--model`` and ``--action`` globs narrow the log."""
        reg.seed_version("churn")
        reg.seed_version("fraud")
        result = reg("events", "--model", "fr*", "--action", "version.*", "--json")
        assert result.exit_code == 0, result.output
        assert ["fraud/1"] == [e["subject"] for e in json.loads(result.stdout)["items"]]

    def test_an_unknown_action_is_a_usage_error(self, reg: Reg) -> None:
        """A glob that matches no action exits 2 with one line naming it."""
        result = reg("events", "--action", "version.registered")
        assert result.exit_code == 2
        assert "version.registered" in one_line_error(result)


class TestFollow:
    def test_follow_prints_events_as_they_are_committed(self, reg: Reg) -> None:
        """``reg events --follow --json`` (a real process) prints one JSON event a line as
        central commits them, filtered."""
        import subprocess

        from tests.procs import BIN_DIR, read_lines, stop_process

        head = reg.client().health()["revision"]
        args = [str(BIN_DIR / "reg"), "--central", reg.url, "--token", reg.tokens["admin"]]
        proc = subprocess.Popen(
            [*args, "events", "--follow", "--json", "--model", "churn", "--after", str(head)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": str(BIN_DIR)},
        )
        assert proc.stdout is not None
        try:
            for name in ("fraud", "churn"):
                reg.client().create_model(name)
            reg.seed_version("churn")
            lines = [json.loads(line) for line in read_lines(proc.stdout, 2)]
        finally:
            stop_process(proc)
            proc.stdout.close()
        assert ["churn", "churn/1"] == [e["subject"] for e in lines]


class TestAuditVerify:
    def test_intact_chain_is_ok(self, reg: Reg) -> None:
        """An untouched log verifies: exit 0, ``ok`` and the number checked."""
        reg.seed_version()
        result = reg("audit", "verify", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert (True, report["revision"]) == (report["ok"], report["checked"])

    def test_edited_event_fails_and_names_the_revision(self, reg: Reg) -> None:
        """Editing one event row in the file makes verify exit 1 naming that revision."""
        reg.seed_version()
        conn = sqlite3.connect(reg.server.config.registry_db)
        try:
            with conn:
                conn.execute("UPDATE events SET actor = 'mallory' WHERE revision = 2")
        finally:
            conn.close()
        result = reg("audit", "verify")
        assert result.exit_code == 1
        assert "revision 2" in one_line_error(result)
        assert "FAILED" in result.stdout

    def test_needs_admin(self, reg: Reg) -> None:
        """A reader cannot verify: exit 4."""
        assert reg("audit", "verify", token="reader").exit_code == 4
