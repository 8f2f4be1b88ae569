"""click's test runner with standard error kept apart, on every click release we support.

click 8.2 removed ``CliRunner(mix_stderr=...)`` and always captures standard error on its own;
click 8.1 (the floor in ``pyproject.toml``) mixes it into the output unless told not to.
"""

from __future__ import annotations

import inspect

from click.testing import CliRunner as _ClickRunner
from click.testing import Result

__all__ = ["CliRunner", "Result"]

_MIXES_BY_DEFAULT = "mix_stderr" in inspect.signature(_ClickRunner.__init__).parameters


def CliRunner() -> _ClickRunner:
    """A runner whose results have ``stdout`` and ``stderr`` separately."""
    if _MIXES_BY_DEFAULT:
        return _ClickRunner(mix_stderr=False)  # type: ignore[call-arg]
    return _ClickRunner()
