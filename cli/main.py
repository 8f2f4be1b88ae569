"""The ``reg`` command: the root group, its global options, and the groups it is made of.

Each command group lives in its own module and exposes ``register(root)``; this module only
wires them together and turns library errors into one line and an exit code at the boundary.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict or permission denied, 5 unavailable.
"""

from __future__ import annotations

import importlib
import sys

import click

from modelreg import __version__
from modelreg.cli.context import RegGroup, global_options

__all__ = ["COMMAND_MODULES", "main", "root"]

#: The modules that add commands to ``reg``; each defines ``register(root: click.Group)``.
COMMAND_MODULES = (
    "modelreg.cli.central_cmd",  # reg central serve|status
    "modelreg.cli.models",  # reg models create|list|show
    "modelreg.cli.versions",  # reg push|approve|reject|archive|search
    "modelreg.cli.aliases",  # reg promote|rollback|history
    "modelreg.cli.audit",  # reg events, reg audit verify
    "modelreg.cli.tokens",  # reg token create|list|revoke
    "modelreg.cli.webhooks",  # reg webhook create|list|show|update|delete|test|deliveries|…
    "modelreg.cli.node",  # reg resolve|watch|status (sidecar by default)
    "modelreg.cli.sidecar_cmd",  # reg sidecar run
    "modelreg.cli.up",  # reg up
)


@click.group(
    cls=RegGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 ok, 1 error, 2 usage or invalid argument, 3 not found, "
    "4 conflict or permission denied, 5 unavailable.",
)
@click.version_option(__version__, "--version", prog_name="reg", message="%(prog)s %(version)s")
@global_options
def root() -> None:
    """modelreg: which exact model serves production, who approved it, what it was trained on.

    \b
    Example:
        reg up --demo
        reg resolve fraud@production
    """


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a group still being built is simply absent
        if _exc.name != _name:
            raise
        continue
    _module.register(root)


def main() -> None:
    """Console-script entry point."""
    sys.exit(root.main(prog_name="reg", standalone_mode=True))
