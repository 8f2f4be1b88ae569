"""The docs are kept honest by tests: commands, settings, error codes, files and the quick start.

Like sqlite-utils' ``test_docs.py`` and Datasette's ``test_settings_are_documented``: adding a
command, a setting, an error code or a module without documenting it fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from modelreg.central.config import SETTINGS as CENTRAL_SETTINGS
from modelreg.cli.main import root
from modelreg.errors import CODES
from modelreg.sidecar.config import SETTINGS as SIDECAR_SETTINGS
from tests.e2e.readme import commands, fenced_blocks, quick_start, walkthrough

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
ARCHITECTURE = DOCS / "ARCHITECTURE.md"
#: Where error codes are documented: the REST API and the socket protocol.
ERROR_DOCS = (DOCS / "API.md", DOCS / "PROTOCOL.md")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def all_docs() -> str:
    """README.md and every page under docs/."""
    return "\n".join([_read(README), *(_read(page) for page in sorted(DOCS.glob("*.md")))])


def leaf_commands(
    group: click.Group = root, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every runnable ``reg`` command (groups only list theirs) with its word path."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = sorted(leaf_commands())
COMMAND_IDS = [" ".join(path) for path, _ in COMMANDS]


class TestCommands:
    def test_the_command_tree_is_complete(self) -> None:
        """Every command group of docs/ARCHITECTURE.md is registered (a missing module would hide
        its docs)."""
        expected = {
            "up", "central serve", "sidecar run", "models create", "push", "approve", "promote",
            "rollback", "history", "resolve", "watch", "status", "search", "events",
            "audit verify", "token create",
        }  # fmt: skip
        assert set() == expected - set(COMMAND_IDS)

    @pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
    def test_command_help_has_an_example(
        self, path: tuple[str, ...], command: click.Command
    ) -> None:
        """Every command's help text shows at least one example invocation."""
        help_text = command.help or ""
        assert "Example" in help_text
        assert f"reg {' '.join(path)}" in help_text

    @pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
    def test_command_appears_in_the_docs(
        self, path: tuple[str, ...], command: click.Command
    ) -> None:
        """Every command is named in README.md or a page under docs/."""
        assert f"reg {' '.join(path)}" in all_docs()

    def test_root_help_has_an_example(self) -> None:
        """``reg --help`` starts a new user off with an example."""
        assert "Example" in (root.help or "")

    @pytest.mark.parametrize(
        "group",
        [cmd for cmd in root.commands.values() if isinstance(cmd, click.Group)],
        ids=lambda group: group.name,
    )
    def test_group_help_has_an_example(self, group: click.Group) -> None:
        """Each command group's help (``reg central --help``…) shows an example too."""
        assert "Example" in (group.help or "")


class TestSettings:
    @pytest.mark.parametrize("setting", CENTRAL_SETTINGS, ids=lambda s: s.name)
    def test_central_setting_is_documented(self, setting: Any) -> None:
        """Each central setting appears with its environment variable in the docs."""
        docs = all_docs()
        assert f"`{setting.name}`" in docs
        assert f"`{setting.env}`" in docs

    @pytest.mark.parametrize("setting", SIDECAR_SETTINGS, ids=lambda s: s.name)
    def test_sidecar_setting_is_documented(self, setting: Any) -> None:
        """Each sidecar setting appears with its environment variable in the docs."""
        assert f"`{setting.env}`" in all_docs()


class TestErrorCodes:
    @pytest.mark.parametrize("code", sorted(CODES))
    def test_error_code_is_documented(self, code: str) -> None:
        """Each wire error code is documented in docs/API.md or docs/PROTOCOL.md."""
        documented = "\n".join(_read(page) for page in ERROR_DOCS)
        assert f"`{code}`" in documented


class TestReadme:
    def test_quick_start_is_exactly_make_up_and_make_test(self) -> None:
        """The quick start is the two commands and nothing else."""
        assert ["make up", "make test"] == commands(quick_start(README.read_text()))

    def test_make_targets_do_what_the_quick_start_says(self) -> None:
        """``make up`` runs ``reg up`` and ``make test`` runs pytest, both from .venv."""
        makefile = (REPO / "Makefile").read_text()
        up = re.search(r"^up:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        assert up is not None and "$(BIN)/reg up" in up.group(1)
        assert test is not None and "$(BIN)/pytest" in test.group(1)

    def test_walkthrough_covers_the_first_ten_minutes(self) -> None:
        """The marked walkthrough pushes, approves with a second token, promotes, resolves in
        Python, watches, rolls back and asks about the past."""
        steps = walkthrough(README.read_text())
        shell = "\n".join(step.code for step in steps if step.kind == "run")
        python = "\n".join(step.code for step in steps if step.kind == "python")
        for needle in (
            "reg push",
            "reg token create",
            "--token-file",
            " approve ",
            "reg promote",
            "reg rollback",
            "--at ",
        ):
            assert needle in shell
        assert ".resolve(" in python
        assert ".watch(" in python
        assert ["stack"] == [step.kind for step in steps if step.kind == "stack"]

    def test_every_fenced_block_has_a_language(self) -> None:
        """Code blocks say their language, so the walkthrough markers know what they run."""
        text = README.read_text()
        unlabelled = [line for lang, _, line in fenced_blocks(text) if not lang]
        diagram = fenced_blocks(text)[0][2]
        assert [diagram] == unlabelled


class TestArchitecture:
    def test_every_named_file_exists(self) -> None:
        """Every path docs/ARCHITECTURE.md names is a real file or folder of the repository."""
        pattern = r"`((?:modelreg|central|sidecar|cli|deploy|examples|tests|benchmarks)/[\w./-]*)`"
        names = set(re.findall(pattern, ARCHITECTURE.read_text()))
        assert names
        assert [] == sorted(name for name in names if not (REPO / name).exists())

    @pytest.mark.parametrize("package", ["modelreg", "central", "sidecar", "cli"])
    def test_every_module_is_described(self, package: str) -> None:
        """Every module of the package and its three process folders is named in
        docs/ARCHITECTURE.md."""
        text = ARCHITECTURE.read_text()
        modules = sorted(
            f"{package}/{path.name}"
            for path in (REPO / package).glob("*.py")
            if path.name != "__init__.py" or package == "modelreg"
        )
        assert [] == [module for module in modules if f"`{module}`" not in text]


def _table_flags(text: str, heading: str) -> list[str]:
    """The flags (third column) of the first table after the bold ``heading`` in README."""
    section = text.split(heading, 1)[1]
    rows = [line for line in section.split("\n\n", 2)[1].splitlines() if line.startswith("| `")]
    return [flag for row in rows for flag in re.findall(r"`(--[a-z-]+)`", row.split("|")[3])]


class TestConfigurationTable:
    @pytest.mark.parametrize(
        ("heading", "command"),
        [("**Central**", ("central", "serve")), ("**Sidecar**", ("sidecar", "run"))],
    )
    def test_every_documented_flag_exists(self, heading: str, command: tuple[str, str]) -> None:
        """Each flag of the README's settings tables is an option of its command."""
        group = root.commands[command[0]]
        assert isinstance(group, click.Group)
        options = {opt for param in group.commands[command[1]].params for opt in param.opts}
        flags = _table_flags(README.read_text(), heading)
        assert flags
        assert [] == [flag for flag in flags if flag not in options]


class TestLinks:
    @pytest.mark.parametrize(
        "page",
        [README, REPO / "deploy" / "README.md", *sorted(DOCS.glob("*.md"))],
        ids=lambda page: page.relative_to(REPO).as_posix(),
    )
    def test_relative_links_point_at_files(self, page: Path) -> None:
        """Every relative Markdown link of README.md, deploy/ and docs/ names an existing file."""
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
        local = [target for target in targets if "://" not in target]
        assert [] == [target for target in local if not (page.parent / target).exists()]
