"""The one history a node serves: never replaced by a copy that does not extend it.

A node never serves a history that does not extend the one it served (issue 18, finding 2):
when the replica was deleted and an empty central took over, or central was restored from an
old backup, a fresh copy holds a *lower* revision, or the same revision (or a higher one) with
*another event* there. Serving it would silently rewind every lookup, so the follower asks
:class:`History` about every copy before it loads it (:func:`modelreg.sidecar.index.probe`: the
copy's head and its event hash at the served revision). A copy that does not extend is kept as
the *candidate* (its litestream child keeps following the replica), the node keeps serving its
last good index and reports ``diverged`` in ``status`` and ``/metrics``, and adopts the
candidate's history only:

* on an explicit operator action: ``reg sidecar adopt`` writes :data:`ADOPT_NAME` into the data
  directory, naming the candidate's revision and event hash (whoever may write the sidecar's
  data directory may decide what it serves; a serving process that can only reach the socket
  cannot), or
* after ``diverged_grace_s`` seconds of continuous divergence, when that setting is not 0 (the
  default 0 never adopts by itself).

While diverged the served index is saved for cold starts (``index.msgpack``), so a restarted
sidecar finds the history it served there and does not take the candidate copy on disk for
it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg.sidecar.index import Index, Probe

__all__ = ["ADOPT_NAME", "AdoptRequest", "History", "read_adopt_request", "write_adopt_request"]

log = logging.getLogger(__name__)

#: The operator's adoption request, in the data directory (written by ``reg sidecar adopt``).
ADOPT_NAME = "adopt.json"


@dataclass(frozen=True)
class AdoptRequest:
    """Adopt the history whose event at ``revision`` has ``hash`` (None: whatever diverged)."""

    revision: int | None
    hash: str | None

    def matches(self, probe: Probe) -> bool:
        """Whether a candidate read as ``probe`` (:func:`~modelreg.sidecar.index.probe` at
        :attr:`revision`) holds the requested history."""
        if self.revision is None or not self.hash:
            return True
        return probe.extends(self.revision, self.hash)


def write_adopt_request(data_dir: Path, revision: int | None, digest: str | None) -> Path:
    """Write the adoption request atomically (mode 0600); its path. Raises ``OSError``."""
    path = data_dir / ADOPT_NAME
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"revision": revision, "hash": digest}, fh)
    os.replace(tmp, path)
    return path


def read_adopt_request(data_dir: Path) -> AdoptRequest | None:
    """The pending adoption request, or None. An unreadable file asks for whatever diverged
    (an operator who wrote the file by hand meant it)."""
    path = data_dir / ADOPT_NAME
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return AdoptRequest(None, None)
    if not isinstance(value, dict):
        return AdoptRequest(None, None)
    revision = value.get("revision")
    digest = value.get("hash")
    return AdoptRequest(
        revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
        digest if isinstance(digest, str) else None,
    )


class History:
    """What the node served and what diverged from it. Only the event loop calls it."""

    def __init__(self, data_dir: Path, grace_s: float) -> None:
        self.data_dir = data_dir
        self.grace_s = grace_s
        #: The candidate's head when divergence was last seen (None: not diverged).
        self.candidate: Probe | None = None
        self.candidate_path = ""
        #: Wall-clock and monotonic time divergence began (reset when it clears).
        self.since = 0.0
        self._since_mono = 0.0
        self.divergences = 0
        self.adoptions = 0
        self._mismatch_logged = ""

    @property
    def diverged(self) -> bool:
        return self.candidate is not None

    def extends(self, served: Index | None, probe: Probe) -> bool:
        """Whether a copy read as ``probe`` (at ``served.revision``) may replace ``served``."""
        return served is None or probe.extends(served.revision, served.last_hash)

    def diverge(self, served: Index | None, probe: Probe, path: Path) -> None:
        """Record a copy at ``path`` that does not extend ``served`` (logged once per history)."""
        new_history = self.candidate is None or self.candidate.last_hash != probe.last_hash
        if self.candidate is None:
            self.since = time.time()
            self._since_mono = time.monotonic()
            self.divergences += 1
        if new_history:
            log.warning(
                "the replica holds another history: a copy at revision %d (event %s) does not "
                "extend the served revision %s (event %s); still serving the last good copy "
                "(`reg sidecar adopt` to take the new history%s)",
                probe.revision,
                probe.last_hash[:12] or "-",
                served.revision if served is not None else "-",
                served.last_hash[:12] if served is not None and served.last_hash else "-",
                f", or wait {self.grace_s:g} s" if self.grace_s > 0 else "",
            )
        self.candidate = probe
        self.candidate_path = str(path)

    def clear(self) -> None:
        """The served history goes on (or was adopted): not diverged any more."""
        if self.candidate is not None:
            log.info("no longer diverged")
        self.candidate = None
        self.candidate_path = ""
        self._mismatch_logged = ""
        (self.data_dir / ADOPT_NAME).unlink(missing_ok=True)

    def request(self) -> AdoptRequest | None:
        """The operator's pending adoption request, if any; one left over while nothing
        diverged is removed."""
        request = read_adopt_request(self.data_dir)
        if request is not None and self.candidate is None:
            log.info("ignoring %s: nothing diverged", ADOPT_NAME)
            (self.data_dir / ADOPT_NAME).unlink(missing_ok=True)
            return None
        return request

    def adoption(self, request: AdoptRequest | None, probe: Probe | None) -> str | None:
        """Why the candidate may be adopted now: ``operator`` (``request`` matches the
        candidate read as ``probe`` at the request's revision), ``grace``, or None."""
        if self.candidate is None:
            return None
        if request is not None and probe is not None:
            if request.matches(probe):
                return "operator"
            if self._mismatch_logged != probe.last_hash:
                self._mismatch_logged = probe.last_hash
                log.warning(
                    "%s asks for the history with event %s at revision %s; the replica now "
                    "holds another one (revision %d): not adopting it",
                    ADOPT_NAME,
                    (request.hash or "")[:12],
                    request.revision,
                    probe.revision,
                )
        if self.grace_s > 0 and time.monotonic() - self._since_mono >= self.grace_s:
            return "grace"
        return None

    def adopted(self, served: Index | None, index: Index, reason: str) -> None:
        log.warning(
            "adopted another history (%s): now serving revision %d (event %s), was revision %s",
            "by the operator" if reason == "operator" else f"after the {self.grace_s:g} s grace",
            index.revision,
            index.last_hash[:12] or "-",
            served.revision if served is not None else "-",
        )
        self.adoptions += 1
        self.clear()

    def status(self, served: Index | None) -> dict[str, Any] | None:
        """The ``diverged`` field of the status answer (None when not diverged)."""
        candidate = self.candidate
        if candidate is None:
            return None
        return {
            "revision": candidate.revision,
            "hash": candidate.last_hash,
            "served_revision": served.revision if served is not None else None,
            "served_hash": served.last_hash if served is not None else None,
            "since": self.since,
            "copy": self.candidate_path,
            "grace_s": self.grace_s,
        }
