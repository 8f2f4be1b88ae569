"""A Hypothesis state machine drives the registry against a plain in-memory model of its rules.

Every answer (record or error class) must match the model, and after every step the
invariants hold: the revision moved by exactly the writes that succeeded, the hash chain
verifies, aliases point only at existing non-archived versions, protected aliases only at
approved ones, and every status in the database is the model's.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from modelreg import errors
from modelreg.central import audit
from modelreg.central.config import CentralConfig
from modelreg.central.registry import UNSET, Registry

MODELS = ("fraud", "churn")
ALIASES = ("production", "staging")
PROTECTED = {"production"}
ACTORS = ("alice", "bob")
SHAS = ("1" * 64, "2" * 64)
#: How a move states ``expected``; mostly right, so that moves succeed often enough.
EXPECTED = st.sampled_from(["unset", "unset", "current", "current", "none", "other"])


@dataclass
class Version:
    sha: str
    run_id: str | None
    key: str | None
    created_by: str
    status: str = "registered"


@dataclass
class ModelState:
    last: int = 0
    versions: dict[int, Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    #: Per alias, its stack of targets (None: unset), as the rules define rollback.
    stacks: dict[str, list[int | None]] = field(default_factory=dict)
    #: Per alias, every move as (time, target).
    moves: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="regsm-"))
        self.reg = Registry(CentralConfig(data_dir=self.tmp, protected_aliases=("production",)))
        self.run(self.reg.open())
        self.models: dict[str, ModelState] = {}
        self.revision = 0
        self.db = sqlite3.connect(f"file:{self.reg.config.registry_db}?mode=ro", uri=True)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.db.close()
            self.run(self.reg.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def call(self, coro: Any, expected_error: type[errors.RegistryError] | None) -> Any:
        """Run one registry call; check that it raised exactly ``expected_error`` (or not)."""
        try:
            result = self.run(coro)
        except errors.RegistryError as exc:
            assert expected_error is type(exc), f"expected {expected_error}, got {exc!r}"
            return None
        assert expected_error is None, f"expected {expected_error}, got {result!r}"
        return result

    def pick(self, model: str, index: int) -> int:
        """Mostly an existing version number (``index`` < 6), else one that does not exist."""
        existing = sorted(self.models[model].versions)
        if index < 6 and existing:
            return existing[index % len(existing)]
        return self.models[model].last + 1

    def wrote(self, result: dict[str, Any]) -> None:
        self.revision += 1
        assert self.revision == result["revision"]

    # -- rules -----------------------------------------------------------------------

    @initialize()
    def create_models(self) -> None:
        for name in MODELS:
            self.wrote(self.run(self.reg.create_model("alice", name)))
            self.models[name] = ModelState()
            for sha in SHAS:
                self.register(name, "alice", sha, None, None)

    @rule(
        model=st.sampled_from(MODELS),
        actor=st.sampled_from(ACTORS),
        sha=st.sampled_from(SHAS),
        run_id=st.sampled_from([None, "r1"]),
        key=st.sampled_from([None, "k1", "k2"]),
    )
    def register(
        self, model: str, actor: str, sha: str, run_id: str | None, key: str | None
    ) -> None:
        state = self.models[model]
        existing: int | None = None
        error: type[errors.RegistryError] | None = None
        by_key = [n for n, v in state.versions.items() if key is not None and v.key == key]
        if by_key:
            found = state.versions[by_key[0]]
            if (found.sha, found.run_id) == (sha, run_id):
                existing = by_key[0]
            else:
                error = errors.AlreadyExists
        elif run_id is not None:
            same = sorted(
                n for n, v in state.versions.items() if (v.run_id, v.sha) == (run_id, sha)
            )
            existing = same[0] if same else None
        answer = self.call(
            self.reg.register_version(
                actor,
                model,
                artifact_uri=f"s3://models/{sha[:8]}",
                sha256=sha,
                run_id=run_id,
                idempotency_key=key,
            ),
            error,
        )
        if answer is None:
            return
        record, created = answer
        if existing is not None:
            assert (False, existing, self.revision) == (
                created,
                record["version"],
                record["revision"],
            )
            return
        state.last += 1
        state.versions[state.last] = Version(sha, run_id, key, actor)
        assert (True, state.last, "registered") == (created, record["version"], record["status"])
        self.wrote(record)

    @rule(
        model=st.sampled_from(MODELS),
        index=st.integers(0, 6),
        actor=st.sampled_from(ACTORS),
        approve=st.sampled_from([True, True, True, False]),
    )
    def decide(self, model: str, index: int, actor: str, approve: bool) -> None:
        version = self.pick(model, index)
        found = self.models[model].versions.get(version)
        error: type[errors.RegistryError] | None = None
        if found is None:
            error = errors.VersionNotFound
        elif found.status != "registered":
            error = errors.InvalidTransition
        elif found.created_by == actor:
            error = errors.FourEyesViolation
        record = self.call(self.reg.decide(actor, model, version, approve, "c"), error)
        if record is not None:
            assert found is not None
            found.status = "approved" if approve else "rejected"
            assert (found.status, actor) == (record["status"], record["decision"]["by"])
            self.wrote(record)

    @rule(model=st.sampled_from(MODELS), index=st.sampled_from([0, 0, 0, 1, 6]))
    def archive(self, model: str, index: int) -> None:
        # Mostly the oldest version: archiving at random would leave nothing to promote.
        version = self.pick(model, index)
        state = self.models[model]
        found = state.versions.get(version)
        error: type[errors.RegistryError] | None = None
        if found is None:
            error = errors.VersionNotFound
        elif found.status == "archived":
            error = errors.InvalidTransition
        elif version in state.aliases.values():
            error = errors.VersionInUse
        record = self.call(self.reg.archive("admin", model, version), error)
        if record is not None:
            assert found is not None
            found.status = "archived"
            assert "archived" == record["status"]
            self.wrote(record)

    def _expected(self, state: ModelState, alias: str, choice: str, other: int) -> Any:
        return {
            "unset": UNSET,
            "none": None,
            "current": state.aliases.get(alias),
            "other": other,
        }[choice]

    def _moved(
        self,
        state: ModelState,
        alias: str,
        move: dict[str, Any],
        target: int | None,
        action: str,
    ) -> None:
        current = state.aliases.get(alias)
        assert (current, target, action) == (
            move["from_version"],
            move["to_version"],
            move["action"],
        )
        stack = state.stacks.setdefault(alias, [])
        if action == "rollback":
            while stack and stack[-1] != target:
                stack.pop()
        elif not stack or stack[-1] != target:
            stack.append(target)
        if target is None:
            del state.aliases[alias]
        else:
            state.aliases[alias] = target
        state.moves.setdefault(alias, []).append((move["at"], target))
        self.wrote(move)

    @rule(
        model=st.sampled_from(MODELS),
        alias=st.sampled_from(ALIASES),
        index=st.integers(0, 6),
        expected=EXPECTED,
        other=st.integers(1, 4),
    )
    def promote(self, model: str, alias: str, index: int, expected: str, other: int) -> None:
        version = self.pick(model, index)
        state = self.models[model]
        want = self._expected(state, alias, expected, other)
        found = state.versions.get(version)
        error: type[errors.RegistryError] | None = None
        if found is None:
            error = errors.VersionNotFound
        elif want is not UNSET and want != state.aliases.get(alias):
            error = errors.AliasConflict
        elif found.status == "archived":
            error = errors.InvalidTransition
        elif alias in PROTECTED and found.status != "approved":
            error = errors.NotApproved
        move = self.call(self.reg.set_alias("dep", model, alias, version, expected=want), error)
        if move is not None:
            self._moved(state, alias, move, version, "set")

    # Hypothesis picks rules uniformly: these duplicates make approvals, moves and rollbacks
    # more frequent than archives, so that rollbacks have histories to walk.
    @rule(model=st.sampled_from(MODELS), index=st.integers(0, 5))
    def approve(self, model: str, index: int) -> None:
        self.decide(model, index, "carol", True)

    @rule(
        model=st.sampled_from(MODELS),
        alias=st.sampled_from(ALIASES),
        index=st.integers(0, 5),
    )
    def move(self, model: str, alias: str, index: int) -> None:
        self.promote(model, alias, index, "unset", 1)

    @rule(
        model=st.sampled_from(MODELS),
        alias=st.sampled_from(ALIASES),
        index=st.integers(0, 5),
    )
    def move_again(self, model: str, alias: str, index: int) -> None:
        self.promote(model, alias, index, "current", 1)

    @rule(
        model=st.sampled_from(MODELS),
        alias=st.sampled_from(ALIASES),
        expected=EXPECTED,
        other=st.integers(1, 4),
    )
    def delete(self, model: str, alias: str, expected: str, other: int) -> None:
        state = self.models[model]
        want = self._expected(state, alias, expected, other)
        current = state.aliases.get(alias)
        error: type[errors.RegistryError] | None = None
        if want is not UNSET and want != current:
            error = errors.AliasConflict
        elif current is None:
            error = errors.AliasNotFound
        move = self.call(self.reg.delete_alias("dep", model, alias, expected=want), error)
        if move is not None:
            self._moved(state, alias, move, None, "delete")

    @rule(model=st.sampled_from(MODELS), alias=st.sampled_from(ALIASES))
    def rollback(self, model: str, alias: str) -> None:
        state = self.models[model]
        stack = state.stacks.get(alias)
        current = state.aliases.get(alias)
        target: int | None = None
        error: type[errors.RegistryError] | None = None
        if not stack:
            error = errors.AliasNotFound
        else:
            for candidate in reversed(stack[:-1]):
                if (
                    candidate is not None
                    and candidate != current
                    and state.versions[candidate].status == "approved"
                ):
                    target = candidate
                    break
            if target is None:
                error = errors.NothingToRollBack
        move = self.call(self.reg.rollback_alias("dep", model, alias), error)
        if move is not None:
            self._moved(state, alias, move, target, "rollback")

    @rule(model=st.sampled_from(MODELS), alias=st.sampled_from(ALIASES))
    def rollback_again(self, model: str, alias: str) -> None:
        self.rollback(model, alias)

    @rule(model=st.sampled_from(MODELS), alias=st.sampled_from(ALIASES))
    def resolve(self, model: str, alias: str) -> None:
        state = self.models[model]
        live = [n for n, v in state.versions.items() if v.status != "archived"]
        latest = self.call(
            self.reg.resolve(model, "latest"), None if live else errors.VersionNotFound
        )
        if latest is not None:
            assert max(live) == latest["version"]["version"]
        current = state.aliases.get(alias)
        answer = self.call(
            self.reg.resolve(model, alias), None if current is not None else errors.AliasNotFound
        )
        if answer is not None:
            assert current == answer["version"]["version"]

    @rule(
        model=st.sampled_from(MODELS),
        alias=st.sampled_from(ALIASES),
        index=st.integers(0, 50),
    )
    def point_in_time(self, model: str, alias: str, index: int) -> None:
        moves = self.models[model].moves.get(alias)
        if not moves:
            return
        at = moves[index % len(moves)][0]
        # Times never go back, so the answer is the last move made at or before ``at``.
        target = [t for when, t in moves if when <= at][-1]
        answer = self.call(
            self.reg.get_alias(model, alias, at=at),
            errors.AliasNotFound if target is None else None,
        )
        if answer is not None:
            assert target == answer["version"]

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def database_matches_model(self) -> None:
        if not self.models:
            return
        assert self.revision == self.reg.store.revision
        statuses = {
            (m, v): s
            for m, v, s in self.db.execute(
                "SELECT m.name, v.version, v.status FROM versions v"
                " JOIN models m ON m.id = v.model_id"
            )
        }
        aliases = self.db.execute(
            "SELECT m.name, a.name, a.version, v.status FROM aliases a"
            " JOIN models m ON m.id = a.model_id"
            " JOIN versions v ON v.model_id = a.model_id AND v.version = a.version"
        ).fetchall()
        assert {
            (m, n): v.status for m, state in self.models.items() for n, v in state.versions.items()
        } == statuses
        assert {
            (m, a): n for m, state in self.models.items() for a, n in state.aliases.items()
        } == {(m, a): n for m, a, n, _ in aliases}
        for _, alias, _, status in aliases:
            assert "archived" != status
            if alias in PROTECTED:
                assert "approved" == status

    @invariant()
    def chain_verifies(self) -> None:
        # Read from the file directly (no event-loop round trip): keeps shrinking fast.
        result = audit.verify(self.db)
        assert (True, self.revision) == (result["ok"], result["checked"])


RegistryMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRegistryStateMachine = RegistryMachine.TestCase
