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

    def test_reader_scoped_token_cannot_read_the_log(self, reg: Reg) -> None:
        """A token scoped to some models may not read the whole log: exit 4."""
        secret = reg.client().create_token("scoped", "reader", ["fraud*"])["secret"]
        reg.tokens["scoped"] = secret
        result = reg("events", token="scoped")
        assert result.exit_code == 4
        one_line_error(result)


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
