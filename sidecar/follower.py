"""The follower: supervises ``litestream restore -f`` and feeds new indexes to the node.

Files in the data directory: ``replica-N.db`` (a restored copy), ``replica-N.db-txid`` (written
by litestream once the copy is complete, rewritten on each applied change) and
``replica-N.log`` (the child's output). N grows by one for every restore. ``index.msgpack`` is
the encoded index saved after each full load and on shutdown (:mod:`modelreg.sidecar.snapshot`), so
a restart re-encodes only what changed since.

Life cycle, one loop every ``poll`` seconds:

* **Start**: the newest complete local copy is loaded and served at once (fail static), and a
  fresh restore into ``replica-<N+1>.db`` begins. litestream 0.5.17 refuses to resume follow
  mode on an existing copy after any write since the replica's last snapshot
  (docs/ARCHITECTURE.md, "Replication and its pitfalls"), so a copy is never re-followed: a
  restart always restores a new file.
* **Follow**: when the active copy's ``-txid`` changes, its revision and heartbeat are read
  through a short read-only connection; only when the revision moved is the copy loaded (in a
  worker thread, re-encoding only the models the new events name) and swapped in. A heartbeat
  alone only refreshes the age.
* **Heal**: when the child exits, or the heartbeat is older than ``stale_after`` (a silently
  stalled follower), a fresh restore into a new file starts beside the active one; when its
  ``-txid`` appears it is loaded and swapped in, the old child stopped and its files deleted.
  Serving never stops. Retries back off exponentially (capped) while the replica is
  unreachable.
* **Never rewind**: a copy is probed (:func:`~modelreg.sidecar.index.probe`) before it is
  loaded; one whose history does not extend the served one (a replaced or rewound central) is
  kept aside as the candidate of :mod:`modelreg.sidecar.history`, still followed, and served
  only once the operator adopts it or its grace has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import random
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg.sidecar import snapshot
from modelreg.sidecar.config import SidecarConfig
from modelreg.sidecar.history import History
from modelreg.sidecar.index import Index, IndexError_, Probe, load, probe
from modelreg.sidecar.metrics import Metrics
from modelreg.sidecar.state import Node

__all__ = ["Follower", "LitestreamMissing"]

log = logging.getLogger(__name__)

_COPY = re.compile(r"^replica-(\d+)\.db$")
#: ``key=value`` fields of a litestream log line (values may be quoted).
_LOG_FIELD = re.compile(r'(\w[\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')
#: Seconds between checks of the -txid files and the children.
_POLL_S = 0.05
#: Backoff between failed restores, seconds: first retry, cap.
_RETRY_FIRST_S = 0.5
_RETRY_CAP_S = 30.0
#: Longest pause between re-restores while the copy stays stale, seconds.
_STALE_RETRY_CAP_S = 600.0
_STOP_WAIT_S = 5.0
#: Seconds between full garbage collections (see Follower._freeze).
_FULL_GC_EVERY_S = 3600.0


class LitestreamMissing(Exception):
    """The litestream binary is missing or of another version (the message says how to fix)."""


@dataclass
class _Copy:
    """One restored (or restoring) file and the child that writes it, if any."""

    number: int
    path: Path
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    txid: str = ""
    #: Bytes of the child's log already read (see Follower._read_log).
    log_offset: int = 0

    @property
    def txid_path(self) -> Path:
        return self.path.with_name(self.path.name + "-txid")

    @property
    def log_path(self) -> Path:
        return self.path.with_suffix(".log")

    @property
    def pid_path(self) -> Path:
        """The restore child's PID, so a sidecar restarted after a crash can stop it."""
        return self.path.with_suffix(".pid")

    def stop_orphan(self) -> None:
        """Stop a restore child left running by a sidecar that died (SIGKILL, OOM).

        The child runs in its own session, so nothing else stops it; left alone it would keep
        following into a file this sidecar is about to load or delete. Only a process whose
        command line names litestream and this copy is signalled (a recycled PID is left be).
        """
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        finally:
            self.pid_path.unlink(missing_ok=True)
        if str(self.path).encode() not in cmdline or b"restore" not in cmdline:
            return
        log.warning("stopping litestream pid %d left by a previous sidecar", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # it only reads the replica: nothing to flush

    def new_log_lines(self, limit: int = 65536) -> list[str]:
        """Complete lines the child logged since the last call (at most ``limit`` bytes)."""
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            return []
        if size <= self.log_offset:
            self.log_offset = min(self.log_offset, size)
            return []
        with open(self.log_path, "rb") as fh:
            fh.seek(max(self.log_offset, size - limit))
            chunk = fh.read(size - fh.tell())
        end = chunk.rfind(b"\n") + 1
        self.log_offset = size - len(chunk) + end
        return chunk[:end].decode(errors="replace").splitlines()

    def read_txid(self) -> str:
        try:
            return self.txid_path.read_text().strip()
        except OSError:
            return ""

    def remove_files(self) -> None:
        for suffix in ("", "-txid", "-wal", "-shm", "-journal"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)
        tmp = self.path.parent
        for leftover in tmp.glob(self.path.name + ".tmp*"):
            leftover.unlink(missing_ok=True)


class Follower:
    """Runs and heals the litestream child; ``start()`` / ``stop()``.

    ``load_local()`` serves the newest local copy; ``start()`` (which loads it too if not done
    yet) checks litestream, raising :class:`LitestreamMissing`, and starts following.
    """

    def __init__(
        self,
        config: SidecarConfig,
        node: Node,
        metrics: Metrics,
        environ: Mapping[str, str],
    ) -> None:
        self.config = config
        self.node = node
        self.metrics = metrics
        self.environ = environ
        self.data_dir = config.data_dir
        self._active: _Copy | None = None
        self._pending: _Copy | None = None
        self._next_number = 1
        self._restores = 0
        self._retry_s = _RETRY_FIRST_S
        self._next_attempt = 0.0
        self._stale_retry_s = config.stale_after_s
        self._next_stale_attempt = 0.0
        self._task: asyncio.Task[None] | None = None
        self._binary = ""
        self._last_full_gc = time.monotonic()
        #: (revision, last hash) of the index last saved for cold starts (None: nothing saved).
        self._saved_key: tuple[int, str] | None = None
        self.history = History(config.data_dir, config.diverged_grace_s)
        node.history = self.history
        #: A copy holding another history than the served one (see modelreg.sidecar.history);
        #: it may be the active copy itself, when its own child applied the other history.
        self._diverged: _Copy | None = None
        self._loaded_local = False
        self._litestream_env: Any = None

    async def start(self) -> None:
        """Serve the newest local copy (if not done yet) and start restoring a fresh one.

        ``modelreg.central.replication`` (and the aiohttp it imports, ~0.3 s) is imported in a
        worker thread only now, after the local copy is served. Raises :class:`LitestreamMissing`.
        """
        if not self._loaded_local:
            await self.load_local()
        replication = await asyncio.to_thread(
            importlib.import_module, "modelreg.central.replication"
        )
        config = await asyncio.to_thread(importlib.import_module, "modelreg.central.config")
        try:
            self._binary = replication.litestream_path(
                config.CentralConfig(litestream_bin=self.config.litestream_bin or None)
            )
        except replication.ReplicationError as exc:
            raise LitestreamMissing(str(exc)) from None
        self._litestream_env = replication.litestream_env
        self._set_state()
        self._task = asyncio.create_task(self._run())

    async def load_local(self) -> None:
        """Load and serve the newest complete local copy, if any; delete the others.

        Meanwhile the node answers ``not_ready`` (saying it is loading); with no usable copy it
        keeps answering ``not_ready`` until the first restore completes.
        """
        self._loaded_local = True
        waiting = self.node.not_ready_reason
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o750, parents=True)
        for scratch in self.data_dir.glob(".load-*.db"):  # left by a load cut short by a crash
            scratch.unlink(missing_ok=True)
        for pid_file in self.data_dir.glob("replica-*.pid"):  # also copies still restoring
            _Copy(0, pid_file.with_suffix(".db")).stop_orphan()
        copies = self._local_copies()
        self._next_number = max((c.number for c in copies), default=0) + 1
        if copies:
            self.node.not_ready_reason = f"loading the local copy in {self.data_dir}"
        saved = await self._read_saved() if copies else None
        if saved is not None:
            self._saved_key = (saved.revision, saved.last_hash)
        candidate: tuple[_Copy, Probe] | None = None
        for copy in sorted(copies, key=lambda c: c.number, reverse=True):
            if self._active is None and copy.read_txid():
                self.node.not_ready_reason = f"loading the local copy {copy.path}"
                try:
                    head = await asyncio.to_thread(
                        probe, copy.path, saved.revision if saved is not None else 0
                    )
                    if not self.history.extends(saved, head):
                        # The saved index is the history this node served: a newer copy
                        # holding another one is a candidate, never served unasked.
                        if candidate is None:
                            candidate = (copy, head)
                            continue
                        copy.remove_files()
                        continue
                    index = await self._load(copy.path, saved)
                except IndexError_ as exc:
                    log.warning("local copy %s is unusable: %s", copy.path, exc.message)
                else:
                    copy.txid = copy.read_txid()
                    self._active = copy
                    await self._swap(index)
                    continue
            if candidate is not None and copy is candidate[0]:
                continue
            copy.remove_files()
        if candidate is not None:
            if self._active is None and saved is not None:
                log.warning("serving the saved index %s (revision %d)", saved.path, saved.revision)
                self.node.swap(saved)
            await self._park(candidate[0], candidate[1])
        if self.node.index is None:
            self.node.not_ready_reason = waiting
        self._set_state()

    async def stop(self) -> None:
        """Stop the loop and every child (SIGTERM, then SIGKILL after 5 s)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for copy in (self._pending, self._active, self._diverged):
            if copy is not None:
                await _terminate(copy)
        self._set_state("stopped")
        index = self.node.index
        if index is not None and (index.revision, index.last_hash) != self._saved_key:
            await self._save(index)

    @property
    def _saved_path(self) -> Path:
        return self.data_dir / snapshot.SAVED_INDEX_NAME

    async def _swap(self, index: Index) -> None:
        """Serve ``index``; after a full load also save it for the next cold start."""
        self.node.swap(index)
        self.metrics.reloads += 1
        self._freeze()
        if not index.incremental:
            await self._save(index)

    async def _read_saved(self) -> Index | None:
        """:func:`modelreg.sidecar.snapshot.read` in a worker thread, the cyclic GC paused as for a
        load (collections walking the 100k objects being read made it ~2x slower)."""
        gc.disable()
        try:
            return await asyncio.to_thread(snapshot.read, self._saved_path)
        finally:
            self._freeze()

    async def _load(self, path: Path, previous: Index | None) -> Index:
        """:func:`modelreg.sidecar.index.load` in a worker thread, with the cyclic GC paused
        meanwhile.

        Each young-generation collection would walk the new index's 100k-entry dict with the
        GIL held (~10 ms); :meth:`_freeze` re-enables collection once the index is frozen.
        Raises :class:`IndexError_`.
        """
        gc.disable()
        try:
            return await asyncio.to_thread(load, path, previous)
        finally:
            self._freeze()

    def _freeze(self) -> None:
        """Keep the index out of the cyclic garbage collector.

        A full collection walks every entry of the index (about 30 ms for 100k versions) with
        the GIL held, stalling lookups; the index holds no cycles, so it is moved to the
        permanent generation (refcounting still frees it). A rare full collection still runs,
        at most once per :data:`_FULL_GC_EVERY_S`, for stray cycles frozen along with it.
        """
        now = time.monotonic()
        if now - self._last_full_gc > _FULL_GC_EVERY_S:
            self._last_full_gc = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()  # no traversal: even collecting the young generations costs ~10 ms here
        gc.enable()

    async def _save(self, index: Index) -> None:
        try:
            await asyncio.to_thread(snapshot.save, index, self._saved_path)
        except OSError as exc:
            log.warning("cannot save the index to %s: %s", self._saved_path, exc)
        else:
            self._saved_key = (index.revision, index.last_hash)

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the follower die: log, back off, go on
                log.exception("follower tick failed")
                await asyncio.sleep(1.0)
            await asyncio.sleep(_POLL_S)

    async def _tick(self) -> None:
        now = time.monotonic()
        active, pending = self._active, self._pending
        for copy in (active, pending, self._diverged):
            if copy is not None and copy.proc is not None:  # a log of this run's child
                self._read_log(copy)
        if pending is not None:
            await self._check_pending(pending)
        if active is not None and active is self._active:
            await self._check_active(active)
        if self._diverged is not None:
            await self._check_diverged(self._diverged)
        active = self._active
        if self._pending is None:
            # The diverged candidate's child follows the replica too: no restore is needed
            # while it runs (one would only find the same other history).
            followers = [c for c in (active, self._diverged) if c is not None and _alive(c)]
            if not followers and now >= self._next_attempt:
                await self._start_restore()
            elif (
                followers
                and self.node.stale()
                and now - max(c.started for c in followers) > self.config.stale_after_s
                and now >= self._next_stale_attempt
            ):
                log.warning(
                    "copy is stale (heartbeat age %s ms); restoring a fresh one",
                    self.node.age_ms(),
                )
                self._next_stale_attempt = now + self._stale_retry_s
                self._stale_retry_s = min(self._stale_retry_s * 2, _STALE_RETRY_CAP_S)
                await self._start_restore()
        if not self.node.stale():
            self._stale_retry_s = self.config.stale_after_s
        self._set_state()

    async def _check_pending(self, pending: _Copy) -> None:
        txid = pending.read_txid()
        if txid:
            served = self.node.index
            try:
                head = await asyncio.to_thread(
                    probe, pending.path, served.revision if served is not None else 0
                )
                if not self.history.extends(served, head):
                    await self._park(pending, head)
                    await self._save_served()
                    return
                index = await self._load(pending.path, served)
            except IndexError_ as exc:
                log.info("new copy %s not loadable yet: %s", pending.path, exc.message)
                self.metrics.reload_failures += 1
                if pending.proc is not None and pending.proc.returncode is not None:
                    await self._fail(pending)
                return
            if not index.extends_previous:  # it moved on between the probe and the load
                await self._park(pending, head)
                await self._save_served()
                return
            pending.txid = txid
            old = self._active
            self._active, self._pending = pending, None
            self.node.follower["error"] = None
            await self._swap(index)
            self._retry_s = _RETRY_FIRST_S
            if old is not None:
                await _terminate(old)
                old.remove_files()
            await self._drop_diverged()
            return
        if pending.proc is not None and pending.proc.returncode is not None:
            await self._fail(pending)

    async def _fail(self, pending: _Copy) -> None:
        error = _tail(pending.log_path)
        log.warning("restore into %s failed: %s", pending.path, error)
        self.node.follower["error"] = error
        if self.node.index is None:
            self.node.not_ready_reason = (
                f"no local copy yet: restoring from {self.config.follow_url} failed ({error});"
                f" retrying in {self._retry_s:.1f} s"
            )
        pending.remove_files()
        self._pending = None
        self._next_attempt = time.monotonic() + self._retry_s * random.uniform(0.8, 1.2)
        self._retry_s = min(self._retry_s * 2, _RETRY_CAP_S)

    async def _check_active(self, active: _Copy) -> None:
        txid = active.read_txid()
        if not txid or txid == active.txid:
            return
        index = self.node.index
        try:
            head = await asyncio.to_thread(
                probe, active.path, index.revision if index is not None else 0
            )
        except IndexError_ as exc:
            log.info("cannot read %s yet: %s", active.path, exc.message)
            return  # busy while litestream applies: try again next tick
        if not self.history.extends(index, head):
            # Its own child applied another history: not one byte of it is served.
            active.txid = txid
            if self._diverged is None or self._diverged is active:
                await self._park(active, head)
                await self._save_served()
            return
        if index is not None and head.revision == index.revision and index.path == str(active.path):
            active.txid = txid
            self.node.set_heartbeat(head.heartbeat_ms)
            return
        try:
            new = await self._load(active.path, self.node.index)
        except IndexError_ as exc:
            self.metrics.reload_failures += 1
            log.info("cannot load %s yet: %s", active.path, exc.message)
            return
        active.txid = txid
        if not new.extends_previous:
            await self._park(active, head)
            await self._save_served()
            return
        await self._swap(new)
        if self._diverged is active:
            self._diverged = None
            self.history.clear()

    def _read_log(self, copy: _Copy) -> None:
        """Surface the child's errors in ``status`` as it logs them (issue 18, finding 11).

        litestream's follower retries a file it cannot apply (corrupt, truncated) every tick
        and only logs it; read here on every poll, such an error is in ``status`` (and counted
        in ``/metrics``) by the child's next tick, and cleared once it applies updates again.
        """
        for line in copy.new_log_lines():
            fields = _log_fields(line)
            if fields.get("level") == "ERROR":
                self.metrics.follower_errors += 1
                message = fields.get("msg", "litestream error")
                if fields.get("err"):
                    message = f"{message}: {fields['err']}"
                if self.node.follower.get("error") != message[:500]:
                    log.warning("litestream %s: %s", copy.path.name, message)
                self.node.follower["error"] = message[:500]
            elif fields.get("msg") == "follow: applied updates" and copy is self._active:
                self.node.follower["error"] = None

    # -- another history (modelreg.sidecar.history) -----------------------------------------

    async def _park(self, copy: _Copy, head: Probe) -> None:
        """Keep ``copy`` (which does not extend the served history) aside as the candidate."""
        self.history.diverge(self.node.index, head, copy.path)
        copy.txid = copy.read_txid()
        if self._pending is copy:
            self._pending = None
            self._retry_s = _RETRY_FIRST_S
        old, self._diverged = self._diverged, copy
        if old is not None and old is not copy and old is not self._active:
            await _discard(old)

    async def _drop_diverged(self) -> None:
        """The served history goes on: the candidate (if any) is not needed any more."""
        old, self._diverged = self._diverged, None
        if old is not None and old is not self._active:
            await _discard(old)
        self.history.clear()

    async def _save_served(self) -> None:
        """Save the served index, so that a restart finds the history this node served."""
        index = self.node.index
        if index is not None and (index.revision, index.last_hash) != self._saved_key:
            await self._save(index)

    async def _check_diverged(self, candidate: _Copy) -> None:
        """Adopt the candidate's history when the operator asked for it or the grace passed."""
        request = self.history.request()
        found: Probe | None = None
        if request is not None:
            try:
                found = await asyncio.to_thread(probe, candidate.path, request.revision or 0)
            except IndexError_ as exc:
                log.info("cannot read the candidate %s yet: %s", candidate.path, exc.message)
                return
        reason = self.history.adoption(request, found)
        if reason is None:
            return
        try:
            index = await self._load(candidate.path, None)
        except IndexError_ as exc:
            self.metrics.reload_failures += 1
            log.info("cannot load the candidate %s yet: %s", candidate.path, exc.message)
            return
        served = self.node.index
        old = self._active
        candidate.txid = candidate.read_txid()
        self._active, self._diverged = candidate, None
        self.history.adopted(served, index, reason)
        self.node.heartbeat_ms = None  # the adopted history's own heartbeat counts from now
        await self._swap(index)
        if old is not None and old is not candidate:
            await _discard(old)

    async def _start_restore(self) -> None:
        number = self._next_number
        self._next_number += 1
        copy = _Copy(number, self.data_dir / f"replica-{number}.db", started=time.monotonic())
        copy.remove_files()
        interval_ms = max(1, int(self.config.follow_interval_s * 1000 * random.uniform(0.9, 1.1)))
        args = [
            self._binary,
            "restore",
            "-f",
            "-follow-interval",
            f"{interval_ms}ms",
            "-o",
            str(copy.path),
            self.config.follow_url,
        ]
        with open(copy.log_path, "wb") as out:
            copy.proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self._litestream_env(self.environ),
                start_new_session=True,
            )
        copy.pid_path.write_text(f"{copy.proc.pid}\n")
        if self._restores:
            self.node.follower["restarts"] = self._restores
        self._restores += 1
        self._pending = copy

    # -- helpers -----------------------------------------------------------------------------

    def _local_copies(self) -> list[_Copy]:
        copies = []
        for path in self.data_dir.iterdir():
            match = _COPY.match(path.name)
            if match:
                copies.append(_Copy(int(match.group(1)), path))
        return copies

    def _set_state(self, state: str | None = None) -> None:
        """Publish the follower's state: following, restoring, retrying or stopped."""
        running = [
            copy.proc
            for copy in (self._active, self._pending, self._diverged)
            if copy is not None and copy.proc is not None and copy.proc.returncode is None
        ]
        if state is None:
            active = self._active
            if self._pending is not None:
                state = "restoring"
            elif any(c is not None and _alive(c) for c in (active, self._diverged)):
                state = "following"
            else:
                state = "retrying"
        follower = self.node.follower
        follower["state"] = state
        follower["pid"] = running[0].pid if running else None
        follower["path"] = str(self._active.path) if self._active is not None else None


def _log_fields(line: str) -> dict[str, str]:
    """The ``key=value`` fields of one litestream log line (the first of each key wins)."""
    fields: dict[str, str] = {}
    for key, value in _LOG_FIELD.findall(line):
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1].replace('\\"', '"')
        fields.setdefault(key, value)
    return fields


def _alive(copy: _Copy) -> bool:
    return copy.proc is not None and copy.proc.returncode is None


async def _discard(copy: _Copy) -> None:
    """Stop ``copy``'s child and delete its files."""
    await _terminate(copy)
    copy.remove_files()


async def _terminate(copy: _Copy) -> None:
    proc = copy.proc
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)  # a stalled (stopped) child must run to exit
    try:
        await asyncio.wait_for(proc.wait(), _STOP_WAIT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _tail(path: Path, limit: int = 300) -> str:
    """The last meaningful line of a child's log, for error messages."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "restore exited"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else "restore exited without output"
