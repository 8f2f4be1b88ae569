"""Global options of ``reg`` and the per-invocation context every command receives.

Precedence: flags > ``REG_*`` environment (click's ``envvar``) > defaults. The token comes from
``--token`` / ``REG_TOKEN``, else the file named by ``REG_TOKEN_FILE``, else
``<data-dir>/admin.token`` of a local central.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "DEFAULT_CENTRAL_URL",
    "DEFAULT_SOCKET",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Context",
    "global_options",
    "pass_context",
]

DEFAULT_CENTRAL_URL = "http://127.0.0.1:8080"
DEFAULT_SOCKET = ".reg/sidecar.sock"

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5


@dataclass(frozen=True)
class Context:
    central_url: str
    token: str | None
    token_file: Path | None
    socket: Path
    data_dir: Path
    json: bool


F = TypeVar("F", bound=Callable[..., Any])


def global_options(fn: F) -> F:
    """Decorate the root group with the global options and store a :class:`Context`."""

    @click.option(
        "--central",
        "central_url",
        envvar="REG_CENTRAL_URL",
        default=DEFAULT_CENTRAL_URL,
        show_default=True,
        help="Central's URL.",
    )
    @click.option("--token", envvar="REG_TOKEN", default=None, help="Bearer token for central.")
    @click.option(
        "--token-file",
        envvar="REG_TOKEN_FILE",
        type=click.Path(path_type=Path),
        default=None,
        help="File holding the token (default: <data-dir>/admin.token).",
    )
    @click.option(
        "--socket",
        envvar="REG_SOCKET",
        type=click.Path(path_type=Path),
        default=DEFAULT_SOCKET,
        show_default=True,
        help="This node's sidecar socket.",
    )
    @click.option(
        "--data-dir",
        "data_dir",
        envvar="REG_DATA_DIR",
        type=click.Path(path_type=Path),
        default=Path(".reg"),
        show_default=True,
        help="Local data directory (where a local central keeps admin.token).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @click.pass_context
    def wrapper(
        ctx: click.Context,
        central_url: str,
        token: str | None,
        token_file: Path | None,
        socket: Path,
        data_dir: Path,
        as_json: bool,
        **kwargs: Any,
    ) -> Any:
        ctx.obj = Context(
            central_url=central_url.rstrip("/"),
            token=token,
            token_file=token_file,
            socket=socket,
            data_dir=data_dir,
            json=as_json,
        )
        return ctx.invoke(fn, **kwargs)

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper  # type: ignore[return-value]


pass_context = click.make_pass_decorator(Context)
