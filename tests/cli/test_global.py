"""Global behaviour of ``reg``: tokens, unreachable central, help, the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from modelreg.cli.main import root
from tests.cli.conftest import CLEAN_ENV, Reg, one_line_error
from tests.clirunner import CliRunner
from tests.procs import free_port

#: The groups built here; their commands must all show an example in their help.
OWN_COMMANDS = (
    "models create", "models list", "models show", "push", "approve", "reject", "archive",
    "promote", "rollback", "history", "search", "events", "audit verify", "token create",
    "token list", "token revoke", "webhook create", "webhook list", "webhook show",
    "webhook update", "webhook delete", "webhook test", "webhook deliveries", "webhook redeliver",
)  # fmt: skip


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, path + " ")
    return found


class TestTokenSources:
    def test_no_token_is_unauthenticated_with_a_hint(self, reg: Reg, tmp_path: Path) -> None:
        """Without any token: exit 4 and one line saying how to give one."""
        result = reg("models", "list", token=None, global_args=["--data-dir", str(tmp_path)])
        assert result.exit_code == 4
        assert "REG_TOKEN" in one_line_error(result)

    def test_token_file_from_the_environment(self, reg: Reg, tmp_path: Path) -> None:
        """``REG_TOKEN_FILE`` names the file holding the token."""
        token_file = tmp_path / "token"
        token_file.write_text(reg.tokens["reader"] + "\n")
        result = reg("models", "list", token=None, env={"REG_TOKEN_FILE": str(token_file)})
        assert result.exit_code == 0, result.output

    def test_admin_token_of_the_data_dir(self, reg: Reg) -> None:
        """Without token or token file, ``<data-dir>/admin.token`` is used."""
        data_dir = str(reg.server.config.data_dir)
        result = reg("token", "list", token=None, env={"REG_DATA_DIR": data_dir})
        assert result.exit_code == 0, result.output

    def test_token_flag_wins_over_token_file(self, reg: Reg, tmp_path: Path) -> None:
        """``--token`` is used even when REG_TOKEN_FILE names another (reader) token."""
        token_file = tmp_path / "token"
        token_file.write_text(reg.tokens["reader"])
        result = reg("token", "list", env={"REG_TOKEN_FILE": str(token_file)})
        assert result.exit_code == 0, result.output

    def test_missing_token_file_is_an_error(self, reg: Reg, tmp_path: Path) -> None:
        """A named token file that does not exist exits 1 naming it."""
        missing = tmp_path / "absent.token"
        result = reg("models", "list", token=None, env={"REG_TOKEN_FILE": str(missing)})
        assert result.exit_code == 1
        assert str(missing) in one_line_error(result)

    def test_bad_token_exits_4(self, reg: Reg) -> None:
        """A token central does not know exits 4."""
        reg.tokens["bogus"] = "mr_" + "x" * 43
        result = reg("models", "list", token="bogus")
        assert result.exit_code == 4
        assert "no token given" not in one_line_error(result)

    def test_bad_token_from_a_file_gets_no_missing_token_hint(
        self, reg: Reg, tmp_path: Path
    ) -> None:
        """A revoked token read from a file is reported as refused, not as missing."""
        token_file = tmp_path / "token"
        token_file.write_text("mr_" + "y" * 43)
        result = reg("models", "list", token=None, env={"REG_TOKEN_FILE": str(token_file)})
        assert result.exit_code == 4
        assert "no token given" not in one_line_error(result)


class TestUnavailable:
    def test_unreachable_central_exits_5_naming_the_url(self) -> None:
        """Nothing listening: exit 5 and one line with the URL, never a traceback."""
        url = f"http://127.0.0.1:{free_port()}"
        result = CliRunner().invoke(
            root, ["--central", url, "--token", "t", "models", "list"], env=CLEAN_ENV
        )
        assert result.exit_code == 5
        assert url in one_line_error(result)

    def test_central_url_without_scheme_is_a_usage_error(self) -> None:
        """``--central`` must be an http(s) URL: exit 2."""
        result = CliRunner().invoke(
            root, ["--central", "localhost:8080", "--token", "t", "models", "list"], env=CLEAN_ENV
        )
        assert result.exit_code == 2
        assert "http://" in one_line_error(result)


class TestHelp:
    @pytest.mark.parametrize("path", OWN_COMMANDS)
    def test_every_command_has_an_example(self, path: str) -> None:
        """Each command's ``--help`` shows an Example block."""
        result = CliRunner().invoke(root, [*path.split(), "--help"], env=CLEAN_ENV)
        assert result.exit_code == 0, result.output
        assert "Example:" in result.stdout

    def test_every_registered_command_has_an_example(self) -> None:
        """Every leaf command of ``reg`` (whoever wrote it) has an Example in its help text."""
        missing = [
            path
            for path, cmd in _commands(root)
            if not isinstance(cmd, click.Group) and "Example" not in (cmd.help or "")
        ]
        assert missing == []

    @pytest.mark.parametrize("group", ["models", "audit", "token", "central"])
    def test_own_groups_have_an_example(self, group: str) -> None:
        """The groups of these commands show an Example too."""
        command = root.commands[group]
        assert "Example:" in (command.help or "")

    def test_all_own_commands_are_registered(self) -> None:
        """The commands this test covers are all reachable from ``reg``."""
        paths = {path for path, _ in _commands(root)}
        assert set(OWN_COMMANDS) <= paths


#: docs/ARCHITECTURE.md's "The reg command" list: every command and the flags it names (global
#: ones aside).
DOCUMENTED_COMMANDS: dict[str, tuple[str, ...]] = {
    "up": ("--data-dir", "--demo"),
    "central serve": ("--data-dir", "--listen", "--replica"),
    "sidecar run": ("--replica", "--data-dir", "--socket", "--http-socket", "--http-port"),
    "models create": ("--description", "--owner", "--tag"),
    "models list": (),
    "models show": (),
    "push": (
        "--artifact", "--sha256", "--format", "--run-id", "--commit", "--dataset",
        "--dataset-digest", "--parent", "--param", "--metric", "--tag", "--description",
        "--idempotency-key",
    ),
    "approve": ("--comment",),
    "reject": ("--comment",),
    "archive": ("--reason",),
    "promote": ("--to", "--expected", "--reason"),
    "rollback": ("--reason",),
    "history": (),
    "resolve": ("--at", "--central"),
    "watch": (),
    "status": (),
    "search": ("--model", "--status", "--tag", "--run-id", "--alias", "--since", "--until"),
    "events": ("--after", "--follow", "--model", "--action"),
    "audit verify": (),
    "token create": ("--role", "--models"),
    "token list": (),
    "token revoke": (),
    "webhook create": ("--event", "--model", "--description"),
    "webhook list": (),
    "webhook show": (),
    "webhook update": (
        "--url", "--event", "--model", "--all-models", "--description", "--enable",
        "--rotate-secret",
    ),
    "webhook delete": (),
    "webhook test": (),
    "webhook deliveries": ("--state", "--limit", "--page-token"),
    "webhook redeliver": (),
}  # fmt: skip
#: Commands whose output is not data (a server's one line, a daemon's log).
NO_JSON = frozenset({"central serve", "sidecar run", "up"})


class TestDesignList:
    def test_every_design_command_exists_with_its_flags(self) -> None:
        """Every command of docs/ARCHITECTURE.md's list is registered and takes the flags named
        there."""
        commands = dict(_commands(root))
        missing = {
            path: [
                flag
                for flag in flags
                if path not in commands
                or flag not in {o for p in commands[path].params for o in p.opts}
            ]
            for path, flags in DOCUMENTED_COMMANDS.items()
        }
        assert {} == {
            path: flags for path, flags in missing.items() if flags or path not in commands
        }

    def test_global_options(self) -> None:
        """The root takes --central, --token, --socket and --json."""
        options = {o for p in root.params for o in p.opts}
        assert set() == {"--central", "--token", "--socket", "--json"} - options

    def test_output_commands_take_json_after_the_command(self) -> None:
        """Every command whose output is data accepts --json after it, too."""
        leaves = [(p, c) for p, c in _commands(root) if not isinstance(c, click.Group)]
        lacking = [
            path
            for path, command in leaves
            if path not in NO_JSON and "--json" not in {o for p in command.params for o in p.opts}
        ]
        assert [] == lacking


class TestEntryPoint:
    def test_installed_reg_creates_and_lists_models(self, reg: Reg) -> None:
        """The installed ``reg`` script runs a command end to end and prints JSON."""
        exe = Path(sys.executable).parent / "reg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REG_")}
        env |= {"REG_CENTRAL_URL": reg.url, "REG_TOKEN": reg.tokens["admin"]}
        created = subprocess.run(
            [str(exe), "models", "create", "fraud"], env=env, capture_output=True, timeout=60
        )
        assert created.returncode == 0, created.stderr
        listed = subprocess.run(
            [str(exe), "models", "list", "--json"], env=env, capture_output=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert [m["name"] for m in json.loads(listed.stdout)["items"]] == ["fraud"]

    def test_installed_reg_error_is_one_line_with_exit_code(self, reg: Reg) -> None:
        """An error through the installed script: exit 3 and a single stderr line."""
        exe = Path(sys.executable).parent / "reg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REG_")}
        env |= {"REG_CENTRAL_URL": reg.url, "REG_TOKEN": reg.tokens["admin"]}
        shown = subprocess.run(
            [str(exe), "models", "show", "nope"], env=env, capture_output=True, timeout=60
        )
        assert (shown.returncode, len(shown.stderr.decode().strip().splitlines())) == (3, 1)


class TestShellCompletion:
    """The README's completion lines work: click's ``_REG_COMPLETE`` protocol on the real script."""

    def _complete(self, words: str, shell: str = "bash") -> str:
        exe = Path(sys.executable).parent / "reg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REG_")}
        env |= {
            "_REG_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
        assert 0 == done.returncode, done.stderr
        return done.stdout

    @pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
    def test_the_source_script_is_printed(self, shell: str) -> None:
        """``_REG_COMPLETE=<shell>_source reg`` prints a script that calls ``reg`` back."""
        exe = Path(sys.executable).parent / "reg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REG_")}
        env["_REG_COMPLETE"] = f"{shell}_source"
        done = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
        assert 0 == done.returncode, done.stderr
        assert "_REG_COMPLETE" in done.stdout

    def test_commands_and_subcommands_complete(self) -> None:
        """``reg pro<TAB>`` offers promote; ``reg token cr<TAB>`` offers create."""
        assert "plain,promote\n" == self._complete("reg pro")
        assert "plain,create\n" == self._complete("reg token cr")
