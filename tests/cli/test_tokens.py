"""``reg token create|list|revoke`` against a real central."""

from __future__ import annotations

import json

from tests.cli.conftest import Reg, one_line_error


class TestTokenCreate:
    def test_secret_is_printed_once_and_works(self, reg: Reg) -> None:
        """The printed secret authenticates with the role given."""
        result = reg("token", "create", "ci", "--role", "publisher", "--models", "fraud*")
        assert result.exit_code == 0, result.output
        first, secret = result.stdout.strip().splitlines()
        reg.tokens["ci"] = secret
        assert first.startswith("created token ci (role publisher, revision ")
        assert reg("models", "create", "fraud-a", token="ci").exit_code == 0
        assert reg("models", "create", "churn", token="ci").exit_code == 4

    def test_unknown_role_is_a_usage_error(self, reg: Reg) -> None:
        """``--role`` must be one of the five roles."""
        result = reg("token", "create", "ci", "--role", "root")
        assert result.exit_code == 2

    def test_existing_name_is_a_conflict(self, reg: Reg) -> None:
        """A second token of the same name exits 4."""
        result = reg("token", "create", "reader", "--role", "reader")
        assert result.exit_code == 4
        one_line_error(result)


class TestTokenList:
    def test_json_lists_tokens_without_secrets(self, reg: Reg) -> None:
        """The list names every token and carries no secret."""
        result = reg("token", "list", "--json")
        assert result.exit_code == 0, result.output
        items = json.loads(result.stdout)["items"]
        expected = ["admin", "approver", "deployer", "publisher", "reader"]
        assert expected == sorted(t["name"] for t in items)
        assert all("secret" not in t for t in items)
        assert not any(secret in result.stdout for secret in reg.tokens.values())

    def test_text_is_a_table(self, reg: Reg) -> None:
        """Text output has a header row and one row per token."""
        result = reg("token", "list")
        assert result.stdout.splitlines()[0].split()[:2] == ["NAME", "ROLE"]
        assert len(result.stdout.splitlines()) == 6

    def test_needs_admin(self, reg: Reg) -> None:
        """A deployer cannot list tokens: exit 4."""
        assert reg("token", "list", token="deployer").exit_code == 4


class TestTokenRevoke:
    def test_revoked_token_stops_working(self, reg: Reg) -> None:
        """After revoke, the token's calls are refused (exit 4)."""
        result = reg("token", "revoke", "publisher")
        assert result.exit_code == 0, result.output
        assert reg("models", "list", token="publisher").exit_code == 4

    def test_revocation_is_in_the_event_log(self, reg: Reg) -> None:
        """The revocation prints its revision, and ``reg events`` shows it there: by whom,
        which token, its role."""
        result = reg("token", "revoke", "publisher")
        revision = int(
            result.stdout.strip().removeprefix("revoked token publisher (revision ")[:-1]
        )
        events = json.loads(reg("events", "--after", str(revision - 1), "--json").stdout)["items"]
        expected = [(revision, "token.revoke", "publisher", "admin", "publisher")]
        assert expected == [
            (e["revision"], e["action"], e["subject"], e["actor"], e["details"]["role"])
            for e in events
        ]

    def test_unknown_token_exits_3(self, reg: Reg) -> None:
        """Revoking a token that does not exist exits 3."""
        result = reg("token", "revoke", "nobody")
        assert result.exit_code == 3
        one_line_error(result)
