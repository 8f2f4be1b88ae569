"""Read the README the way its tests need it: the quick start and the marked walkthrough steps.

A walkthrough step is an HTML comment ``<!-- walkthrough: KIND [OPTIONS] -->`` that GitHub does
not render, followed by a fenced code block (except ``expect``, which has none):

- ``stack``: the block that starts the stack (``make up``); the test starts ``reg up`` there.
- ``run [exit=N]``: a ``bash`` block; each command (``\\``-continued lines joined, comments
  skipped) runs on its own and must exit with N (default 0). Exported variables carry over.
- ``python``: a ``python`` block run to completion; it must exit 0.
- ``python background``: a ``python`` block started and left running (the watcher).
- ``expect "TEXT"``: the background program's last output line becomes TEXT (with a deadline).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["README", "Step", "commands", "fenced_blocks", "quick_start", "walkthrough"]

README = Path(__file__).resolve().parents[2] / "README.md"

_MARKER = re.compile(r"^<!--\s*walkthrough:\s*(?P<spec>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
_KINDS = ("stack", "run", "python", "expect")


@dataclass(frozen=True)
class Step:
    """One marked step of the walkthrough."""

    kind: str  # one of _KINDS
    code: str = ""  # the fenced block's text (empty for expect)
    lang: str = ""
    options: dict[str, str] = field(default_factory=dict)
    words: tuple[str, ...] = ()  # bare words after the kind ("background")
    line: int = 0  # 1-based line of the marker in the README


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """Every fenced block: ``(language, code, line of the opening fence)``."""
    blocks: list[tuple[str, str, int]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opened = _FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        blocks.append((opened["lang"], "\n".join(body), start + 1))
        index += 1
    return blocks


def quick_start(text: str) -> str:
    """The first fenced block under the ``## Quick start`` heading."""
    section = text.split("\n## Quick start", 1)
    if len(section) != 2:
        raise AssertionError("README has no '## Quick start' section")
    body = section[1].split("\n## ", 1)[0]
    blocks = fenced_blocks(body)
    if not blocks:
        raise AssertionError("README's quick start has no code block")
    return blocks[0][1]


def walkthrough(text: str) -> list[Step]:
    """The marked steps in README order; raises AssertionError on a malformed marker."""
    lines = text.splitlines()
    steps: list[Step] = []
    for number, line in enumerate(lines, start=1):
        marker = _MARKER.match(line)
        if marker is None:
            continue
        parts = shlex.split(marker["spec"])
        if not parts or parts[0] not in _KINDS:
            raise AssertionError(f"README line {number}: unknown walkthrough marker {line!r}")
        kind, rest = parts[0], parts[1:]
        options = dict(part.split("=", 1) for part in rest if "=" in part)
        words = tuple(part for part in rest if "=" not in part)
        if kind == "expect":
            if len(words) != 1:
                raise AssertionError(f"README line {number}: expect needs one quoted text")
            steps.append(Step(kind, words=words, line=number))
            continue
        following = number  # index of the next line (0-based)
        while following < len(lines) and not lines[following].strip():
            following += 1
        fence = _FENCE.match(lines[following]) if following < len(lines) else None
        if fence is None:
            raise AssertionError(f"README line {number}: marker not followed by a code block")
        body: list[str] = []
        following += 1
        while following < len(lines) and lines[following].strip() != "```":
            body.append(lines[following])
            following += 1
        steps.append(Step(kind, "\n".join(body), fence["lang"], options, words, number))
    return steps


def commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, blanks and comments dropped."""
    result: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        result.append(pending + line)
        pending = ""
    if pending:
        result.append(pending.rstrip())
    return result
