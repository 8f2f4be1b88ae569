"""Global options of ``reg``, the per-invocation context every command receives, and the
boundary that turns library errors into one line and an exit code.

Precedence: flags > ``REG_*`` environment (click's ``envvar``) > defaults. The token comes from
``--token`` / ``REG_TOKEN``, else the file named by ``--token-file`` / ``REG_TOKEN_FILE``, else
``<data-dir>/admin.token`` of a local central (when that file exists).

``--json`` is accepted before the command (``reg --json models list``) and, for commands
decorated with :func:`json_option`, after it (``reg models list --json``).

Exit codes (:func:`exit_code_for`): 0 ok, 1 error, 2 usage (also an argument central refused as
invalid), 3 not found, 4 conflict or permission denied (also a missing or bad token),
5 unavailable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from modelreg.central.client import CentralClient
from modelreg.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RegistryError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DEFAULT_CENTRAL_URL",
    "DEFAULT_SOCKET",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "KEY_NUMBER",
    "KEY_VALUE",
    "CommandError",
    "Context",
    "RegGroup",
    "command_error",
    "exit_code_for",
    "global_options",
    "json_option",
    "next_page_hint",
    "page_options",
    "pairs_dict",
    "pass_context",
]

DEFAULT_CENTRAL_URL = "http://127.0.0.1:8080"
DEFAULT_SOCKET = ".reg/sidecar.sock"
#: Name of the admin token file a local central writes into its data directory.
ADMIN_TOKEN_FILE = "admin.token"

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5


def exit_code_for(exc: RegistryError) -> int:
    """The exit code of ``reg`` for a library error."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Conflict | PermissionDenied | Unauthenticated):
        return EXIT_CONFLICT
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, InvalidRequest):
        return EXIT_USAGE
    return EXIT_ERROR


class CommandError(click.ClickException):
    """One line on stderr (``Error: …``) and exit code 1; never a traceback.

    :func:`command_error` builds the subclass for another exit code.
    """

    exit_code = EXIT_ERROR

    def show(self, file: IO[Any] | None = None) -> None:
        # One line: a message that embeds newlines (a server's, say) must not spill over.
        click.echo(f"Error: {' '.join(self.format_message().split())}", file=file, err=True)


class _UsageError(CommandError):
    exit_code = EXIT_USAGE


class _NotFoundError(CommandError):
    exit_code = EXIT_NOT_FOUND


class _ConflictError(CommandError):
    exit_code = EXIT_CONFLICT


class _UnavailableError(CommandError):
    exit_code = EXIT_UNAVAILABLE


_ERROR_CLASSES: dict[int, type[CommandError]] = {
    cls.exit_code: cls
    for cls in (CommandError, _UsageError, _NotFoundError, _ConflictError, _UnavailableError)
}


def command_error(message: str, exit_code: int = EXIT_ERROR) -> CommandError:
    """A :class:`CommandError` that exits with ``exit_code`` (one of the ``EXIT_*``)."""
    return _ERROR_CLASSES.get(exit_code, CommandError)(message)


@dataclass(frozen=True)
class Context:
    central_url: str
    token: str | None
    token_file: Path | None
    socket: Path
    data_dir: Path
    json: bool

    def resolve_token(self) -> str | None:
        """``--token``, else the token file, else ``<data-dir>/admin.token`` if it exists.

        Raises :class:`CommandError` when an explicitly named token file cannot be read.
        """
        if self.token:
            return self.token
        path = self.token_file
        if path is None:
            path = self.data_dir / ADMIN_TOKEN_FILE
            if not path.is_file():
                return None
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise CommandError(f"cannot read token file {path}: {reason}") from None
        if not text:
            raise CommandError(f"token file {path} is empty")
        return text

    def client(self) -> CentralClient:
        """A :class:`CentralClient` for ``--central`` with the resolved token."""
        return CentralClient(self.central_url, self.resolve_token())


def _has_token(obj: Context) -> bool:
    try:
        return obj.resolve_token() is not None
    except CommandError:
        return True


class RegGroup(click.Group):
    """A group whose subcommands' library errors become :class:`CommandError`.

    ``RegistryError`` gets its exit code from :func:`exit_code_for`; an ``Unauthenticated``
    answer to a call made without any token says how to give one.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RegistryError as exc:
            message = exc.message
            obj = ctx.find_object(Context)
            if isinstance(exc, Unauthenticated) and obj is not None and not _has_token(obj):
                message += (
                    " (no token given: pass --token, or set REG_TOKEN or REG_TOKEN_FILE,"
                    f" or run next to a local central's {obj.data_dir / ADMIN_TOKEN_FILE})"
                )
            raise command_error(message, exit_code_for(exc)) from None


F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    ParamType = click.ParamType
else:

    class ParamType(click.ParamType):
        """``click.ParamType``, subscriptable at run time on every click release: it is a generic
        class only from click 8.4 on, and ``pyproject.toml`` accepts click 8.1."""

        def __class_getitem__(cls, item: object) -> type:
            return cls


class KeyValue(ParamType[tuple[str, Any]]):
    """``KEY=VALUE`` -> ``(key, value)``; with ``numeric`` the value must be a finite number."""

    name = "KEY=VALUE"

    def __init__(self, numeric: bool = False) -> None:
        self.numeric = numeric
        if numeric:
            self.name = "KEY=NUMBER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        if not self.numeric:
            return key.strip(), raw
        try:
            number: int | float = int(raw)
        except ValueError:
            try:
                number = float(raw)
            except ValueError:
                self.fail(f"{key.strip()}: expected a number, got {raw!r}", param, ctx)
            if number != number or number in (float("inf"), float("-inf")):
                self.fail(f"{key.strip()}: expected a finite number, got {raw!r}", param, ctx)
        return key.strip(), number


#: ``--tag k=v`` and ``--param k=v`` values.
KEY_VALUE = KeyValue()
#: ``--metric k=v`` values: numbers.
KEY_NUMBER = KeyValue(numeric=True)


def pairs_dict(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` options as a dict (a repeated key keeps its last value)."""
    return dict(pairs)


def page_options(fn: F) -> F:
    """``--limit`` and ``--page-token`` for a command that prints one page of a list."""
    fn = click.option(
        "--page-token", default=None, help="Continue from the page token a previous call printed."
    )(fn)
    fn = click.option(
        "--limit",
        type=click.IntRange(1, 1000),
        default=100,
        show_default=True,
        help="Items per page.",
    )(fn)
    return fn


def next_page_hint(ctx: Context, page: dict[str, Any]) -> None:
    """Tell a person (not a script: stderr, text mode only) how to get the next page."""
    token = page.get("next_page_token")
    if token and not ctx.json:
        click.echo(f"more: add --page-token {token}", err=True)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    obj = ctx.find_object(Context)
    if value and obj is not None:
        ctx.obj = dataclasses.replace(obj, json=True)
    return value


def json_option(fn: F) -> F:
    """Accept ``--json`` after the command too; :func:`pass_context` then sees ``json=True``."""
    option = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print JSON instead of text.",
    )
    return option(fn)


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
        /,
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
