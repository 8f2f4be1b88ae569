"""Every route of central's REST API through aiohttp's test client, on a real SQLite file:
the success answers and the main failure paths."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.appkeys import REGISTRY
from modelreg.central.auth import hash_secret
from modelreg.central.openapi import OPERATIONS, document
from modelreg.errors import CODES, HTTP_STATUS, ModelNotFound
from tests.central.conftest import SHA, Api, db_state
from tests.central.test_auth_matrix import CASES as MATRIX

DOCS = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def _code(body: Any) -> str | None:
    return body["error"]["code"] if isinstance(body, dict) and "error" in body else None


class TestModels:
    async def test_create_answers_the_model_and_revision(self, api: Api) -> None:
        """POST /v1/models answers 201 with the model and the new revision."""
        before = await api.client.app[REGISTRY].revision()
        status, body = await api.call(
            "POST", "/v1/models", json={"name": "fraud", "owner": "risk", "tags": {"team": "r"}}
        )
        expected = (201, "fraud", "risk", {"team": "r"}, "admin", before + 1)
        assert expected == (
            status,
            body["name"],
            body["owner"],
            body["tags"],
            body["created_by"],
            body["revision"],
        )

    async def test_create_twice_conflicts(self, seeded: Api) -> None:
        """Creating an existing model is 409 already_exists."""
        status, body = await seeded.call("POST", "/v1/models", json={"name": "fraud"})
        expected = (409, "already_exists")
        assert expected == (status, _code(body))

    async def test_get_has_aliases_and_latest(self, seeded: Api) -> None:
        """GET /v1/models/{model} holds its aliases and its latest version."""
        status, body = await seeded.call("GET", "/v1/models/fraud", token="reader")
        expected = (200, {"production": 3, "staging": 3}, 3)
        assert expected == (status, body["aliases"], body["latest"]["version"])

    async def test_get_unknown_is_404(self, api: Api) -> None:
        """An unknown model is 404 model_not_found naming the model."""
        status, body = await api.call("GET", "/v1/models/nope")
        expected = (404, "model_not_found", "nope")
        assert expected == (status, _code(body), body["error"]["model"])

    async def test_list_pages_by_name(self, api: Api) -> None:
        """Pages of one follow each other with page_token, without gaps or repeats."""
        for name in ("c", "a", "b"):
            await api.call("POST", "/v1/models", json={"name": name})
        names: list[str] = []
        token = None
        for _ in range(5):
            params = {"limit": "1", **({"page_token": token} if token else {})}
            _, body = await api.call("GET", "/v1/models", params=params)
            names += [m["name"] for m in body["items"]]
            token = body["next_page_token"]
            if token is None:
                break
        expected = ["a", "b", "c"]
        assert expected == names

    async def test_list_by_prefix(self, api: Api) -> None:
        """prefix= keeps only the models whose name starts with it."""
        for name in ("fraud-eu", "fraud-us", "churn"):
            await api.call("POST", "/v1/models", json={"name": name})
        _, body = await api.call("GET", "/v1/models", params={"prefix": "fraud"})
        expected = ["fraud-eu", "fraud-us"]
        assert expected == [m["name"] for m in body["items"]]

    async def test_patch_changes_given_fields(self, seeded: Api) -> None:
        """PATCH changes only the fields given and answers with a new revision."""
        before = await seeded.client.app[REGISTRY].revision()
        status, body = await seeded.call(
            "PATCH", "/v1/models/fraud", token="publisher", json={"owner": "ml"}
        )
        expected = (200, "ml", "card fraud", before + 1)
        assert expected == (status, body["owner"], body["description"], body["revision"])


class TestVersions:
    async def test_register_then_retry_is_idempotent(self, seeded: Api) -> None:
        """A registration answers 201; the same idempotency key again answers 200, same version."""
        body = {"artifact_uri": "s3://m/4", "sha256": "d" * 64, "idempotency_key": "k1"}
        first_status, first = await seeded.call(
            "POST", "/v1/models/fraud/versions", token="publisher", json=body
        )
        again_status, again = await seeded.call(
            "POST", "/v1/models/fraud/versions", token="publisher", json=body
        )
        expected = (201, 4, 200, 4, first["revision"], first["revision"])
        assert expected == (
            first_status,
            first["version"],
            again_status,
            again["version"],
            again["revision"],
            await seeded.client.app[REGISTRY].revision(),
        )

    async def test_retry_by_run_id_and_digest(self, seeded: Api) -> None:
        """Same run_id and sha256 as an existing version answers 200 with that version."""
        status, body = await seeded.call(
            "POST",
            "/v1/models/fraud/versions",
            json={"artifact_uri": "s3://models/fraud/1", "sha256": SHA, "run_id": "run-1"},
        )
        expected = (200, 1)
        assert expected == (status, body["version"])

    async def test_register_records_lineage(self, seeded: Api) -> None:
        """Lineage, params and metrics come back in the version record."""
        _, body = await seeded.call(
            "POST",
            "/v1/models/fraud/versions",
            json={
                "artifact_uri": "gs://b/m",
                "sha256": "e" * 64,
                "size": 10,
                "format": "onnx",
                "commit": "abc123",
                "dataset_uri": "s3://d/x",
                "parent_version": 3,
                "params": {"lr": 0.1},
                "metrics": {"auc": 0.93},
            },
        )
        expected = (
            {"uri": "gs://b/m", "sha256": "e" * 64, "size": 10, "format": "onnx"},
            3,
            {"auc": 0.93},
        )
        assert expected == (body["artifact"], body["lineage"]["parent_version"], body["metrics"])

    async def test_register_on_unknown_model_is_404(self, api: Api) -> None:
        """Registering under a missing model is 404 model_not_found."""
        status, body = await api.call(
            "POST", "/v1/models/nope/versions", json={"artifact_uri": "s3://a/b", "sha256": SHA}
        )
        expected = (404, "model_not_found")
        assert expected == (status, _code(body))

    async def test_list_by_status(self, seeded: Api) -> None:
        """status= keeps only versions in that status."""
        _, body = await seeded.call(
            "GET", "/v1/models/fraud/versions", params={"status": "approved"}
        )
        expected = [1, 3]
        assert expected == sorted(v["version"] for v in body["items"])

    async def test_get_version(self, seeded: Api) -> None:
        """GET one version answers its record with its aliases."""
        status, body = await seeded.call("GET", "/v1/models/fraud/versions/3")
        expected = (200, "approved", ["production", "staging"])
        assert expected == (status, body["status"], body["aliases"])

    async def test_get_missing_version_is_404(self, seeded: Api) -> None:
        """A missing version is 404 version_not_found."""
        status, body = await seeded.call("GET", "/v1/models/fraud/versions/99")
        expected = (404, "version_not_found")
        assert expected == (status, _code(body))

    async def test_patch_version(self, seeded: Api) -> None:
        """PATCH changes a version's description and tags."""
        _, body = await seeded.call(
            "PATCH", "/v1/models/fraud/versions/2", json={"description": "d", "tags": {"k": "v"}}
        )
        expected = ("d", {"k": "v"})
        assert expected == (body["description"], body["tags"])

    async def test_approve_records_the_decision(self, seeded: Api) -> None:
        """Approve sets the status and records who decided, with the comment."""
        _, body = await seeded.call(
            "POST",
            "/v1/models/fraud/versions/2/approve",
            token="approver",
            json={"comment": "lgtm"},
        )
        expected = ("approved", "approver", "lgtm")
        decision = body["decision"]
        assert expected == (body["status"], decision["by"], decision["comment"])

    async def test_reject_without_body(self, seeded: Api) -> None:
        """Reject works with no body at all."""
        status, body = await seeded.call("POST", "/v1/models/fraud/versions/2/reject")
        expected = (200, "rejected")
        assert expected == (status, body["status"])

    async def test_four_eyes(self, seeded: Api) -> None:
        """Whoever registered a version cannot approve it: 403 four_eyes."""
        await seeded.client.app[REGISTRY].register_version(
            "boss", "fraud", artifact_uri="s3://m/4", sha256="d" * 64
        )
        status, body = await seeded.call(
            "POST", "/v1/models/fraud/versions/4/approve", token="boss"
        )
        expected = (403, "four_eyes")
        assert expected == (status, _code(body))

    async def test_approve_rejected_is_invalid_transition(self, seeded: Api) -> None:
        """Approving a rejected version is 409 invalid_transition."""
        await seeded.call("POST", "/v1/models/fraud/versions/2/reject")
        status, body = await seeded.call("POST", "/v1/models/fraud/versions/2/approve")
        expected = (409, "invalid_transition")
        assert expected == (status, _code(body))

    async def test_archive(self, seeded: Api) -> None:
        """Archiving a version no alias holds works and records the reason."""
        _, body = await seeded.call(
            "POST", "/v1/models/fraud/versions/2/archive", json={"reason": "old"}
        )
        expected = ("archived", "old")
        assert expected == (body["status"], body["archived"]["reason"])

    async def test_archive_aliased_version_is_refused(self, seeded: Api) -> None:
        """Archiving a version an alias points at is 409 version_in_use."""
        status, body = await seeded.call("POST", "/v1/models/fraud/versions/3/archive")
        expected = (409, "version_in_use")
        assert expected == (status, _code(body))


class TestAliases:
    async def test_set_answers_the_move(self, seeded: Api) -> None:
        """PUT answers the alias move, with from/to, actor, reason and revision."""
        status, body = await seeded.call(
            "PUT",
            "/v1/models/fraud/aliases/canary",
            token="publisher",
            json={"version": 2, "expected": None, "reason": "try"},
        )
        expected = (200, None, 2, "publisher", "try", "set")
        assert expected == (
            status,
            body["from_version"],
            body["to_version"],
            body["actor"],
            body["reason"],
            body["action"],
        )
        assert body["revision"] == await seeded.client.app[REGISTRY].revision()

    async def test_expected_mismatch_conflicts(self, seeded: Api) -> None:
        """A compare-and-set with a stale expected is 409 alias_conflict and moves nothing."""
        status, body = await seeded.call(
            "PUT", "/v1/models/fraud/aliases/staging", json={"version": 1, "expected": 2}
        )
        _, alias = await seeded.call("GET", "/v1/models/fraud/aliases/staging")
        expected = (409, "alias_conflict", 3)
        assert expected == (status, _code(body), alias["version"])

    async def test_protected_alias_needs_approved_version(self, seeded: Api) -> None:
        """production only accepts approved versions: 409 not_approved."""
        status, body = await seeded.call(
            "PUT", "/v1/models/fraud/aliases/production", token="deployer", json={"version": 2}
        )
        expected = (409, "not_approved")
        assert expected == (status, _code(body))

    async def test_delete_with_expected(self, seeded: Api) -> None:
        """DELETE with expected=none on a set alias conflicts; with the right version it unsets."""
        path = "/v1/models/fraud/aliases/staging"
        wrong, wrong_body = await seeded.call("DELETE", path, params={"expected": "none"})
        right, right_body = await seeded.call("DELETE", path, params={"expected": "3"})
        gone, gone_body = await seeded.call("GET", path)
        expected = (409, "alias_conflict", 200, None, 404, "alias_not_found")
        assert expected == (
            wrong,
            _code(wrong_body),
            right,
            right_body["to_version"],
            gone,
            _code(gone_body),
        )

    async def test_get_at_a_past_time(self, seeded: Api) -> None:
        """?at= answers what the alias pointed at then, and 404 before it existed."""
        _, history = await seeded.call("GET", "/v1/models/fraud/aliases/staging/history")
        first_move = min(history["items"], key=lambda m: m["revision"])
        _, then = await seeded.call(
            "GET", "/v1/models/fraud/aliases/staging", params={"at": first_move["at"]}
        )
        before, before_body = await seeded.call(
            "GET", "/v1/models/fraud/aliases/staging", params={"at": "2000-01-01T00:00:00Z"}
        )
        expected = (1, 404, "alias_not_found")
        assert expected == (then["version"], before, _code(before_body))

    async def test_history_lists_every_move(self, seeded: Api) -> None:
        """History holds every move with from and to."""
        _, body = await seeded.call("GET", "/v1/models/fraud/aliases/production/history")
        expected = [(None, 1), (1, 3)]
        moves = sorted(body["items"], key=lambda m: m["revision"])
        assert expected == [(m["from_version"], m["to_version"]) for m in moves]

    async def test_rollback(self, seeded: Api) -> None:
        """Rollback re-points the alias at its previous approved target."""
        status, body = await seeded.call(
            "POST",
            "/v1/models/fraud/aliases/production/rollback",
            token="deployer",
            json={"reason": "bad"},
        )
        expected = (200, 3, 1, "rollback")
        assert expected == (status, body["from_version"], body["to_version"], body["action"])

    async def test_nothing_to_roll_back(self, seeded: Api) -> None:
        """An alias with no earlier target is 409 nothing_to_roll_back."""
        await seeded.call("PUT", "/v1/models/fraud/aliases/canary", json={"version": 1})
        status, body = await seeded.call("POST", "/v1/models/fraud/aliases/canary/rollback")
        expected = (409, "nothing_to_roll_back")
        assert expected == (status, _code(body))

    async def test_concurrent_compare_and_set(self, seeded: Api) -> None:
        """Two promotions with the same expected at once: one 200, one 409 alias_conflict."""
        path = "/v1/models/fraud/aliases/production"
        results = await asyncio.gather(
            seeded.call("PUT", path, token="deployer", json={"version": 1, "expected": 3}),
            seeded.call("PUT", path, token="admin", json={"version": 1, "expected": 3}),
        )
        _, history = await seeded.call("GET", path + "/history")
        outcomes = sorted((status, _code(body)) for status, body in results)
        expected = ([(200, None), (409, "alias_conflict")], 3)
        assert expected == (outcomes, len(history["items"]))


class TestResolveSearchEvents:
    @pytest.mark.parametrize(("ref", "version"), [("production", 3), ("2", 2), ("latest", 3)])
    async def test_resolve(self, seeded: Api, ref: str, version: int) -> None:
        """An alias, a number or latest resolves to the version record."""
        status, body = await seeded.call("GET", f"/v1/resolve/fraud/{ref}", token="reader")
        expected = (200, "fraud", ref, version)
        assert expected == (status, body["model"], body["ref"], body["version"]["version"])

    async def test_resolve_unknown_alias(self, seeded: Api) -> None:
        """An unknown alias is 404 alias_not_found."""
        status, body = await seeded.call("GET", "/v1/resolve/fraud/nope")
        expected = (404, "alias_not_found")
        assert expected == (status, _code(body))

    async def test_search_filters(self, seeded: Api) -> None:
        """Search combines model, status, run_id and alias filters."""
        _, by_run = await seeded.call("GET", "/v1/versions", params={"run_id": "run-2"})
        _, by_alias = await seeded.call(
            "GET", "/v1/versions", params={"model": "fraud", "alias": "production"}
        )
        _, by_status = await seeded.call("GET", "/v1/versions", params={"status": "registered"})
        expected = ([2], [3], [2])
        assert expected == (
            [v["version"] for v in by_run["items"]],
            [v["version"] for v in by_alias["items"]],
            [v["version"] for v in by_status["items"]],
        )

    async def test_search_by_tags_and_time(self, seeded: Api) -> None:
        """Repeated tag=k=v must all match; created_after excludes older versions."""
        await seeded.call(
            "PATCH", "/v1/models/fraud/versions/1", json={"tags": {"a": "1", "b": "2"}}
        )
        await seeded.call("PATCH", "/v1/models/fraud/versions/2", json={"tags": {"a": "1"}})
        _, tagged = await seeded.call("GET", "/v1/versions?tag=a=1&tag=b=2")
        _, future = await seeded.call(
            "GET", "/v1/versions", params={"created_after": "2999-01-01T00:00:00Z"}
        )
        expected = ([1], [])
        assert expected == ([v["version"] for v in tagged["items"]], future["items"])

    async def test_events_after_and_paging(self, seeded: Api) -> None:
        """Events come oldest first after `after`, and pages continue with page_token."""
        _, first = await seeded.call("GET", "/v1/events", params={"after": "2", "limit": "2"})
        _, second = await seeded.call(
            "GET", "/v1/events", params={"page_token": first["next_page_token"], "limit": "2"}
        )
        expected = [3, 4, 5, 6]
        assert expected == [e["revision"] for e in first["items"] + second["items"]]

    async def test_events_record_the_actor(self, seeded: Api) -> None:
        """Every event's actor is the name of the token that made the write."""
        await seeded.call("PATCH", "/v1/models/fraud", token="publisher", json={"owner": "x"})
        revision = await seeded.client.app[REGISTRY].revision()
        _, body = await seeded.call("GET", "/v1/events", params={"after": str(revision - 1)})
        expected = ["publisher"]
        assert expected == [e["actor"] for e in body["items"]]

    async def test_audit_verify(self, seeded: Api) -> None:
        """The hash chain of an untouched database verifies."""
        _, body = await seeded.call("GET", "/v1/audit/verify")
        revision = await seeded.client.app[REGISTRY].revision()
        expected = (True, revision, None)
        assert expected == (body["ok"], body["revision"], body["first_bad_revision"])


class TestTokens:
    async def test_create_shows_the_secret_once(self, api: Api) -> None:
        """POST /v1/tokens answers the secret; the list never shows secrets or hashes."""
        status, created = await api.call(
            "POST", "/v1/tokens", json={"name": "ci", "role": "publisher", "models": ["fraud-*"]}
        )
        _, listed = await api.call("GET", "/v1/tokens")
        row = next(t for t in listed["items"] if t["name"] == "ci")
        expected = (
            201,
            True,
            {"name", "role", "models", "created_by", "created_at", "last_used_at"},
        )
        assert expected == (
            status,
            bool(re.fullmatch(r"mr_[A-Za-z0-9_-]{43}", created["secret"])),
            set(row),
        )
        assert created["secret"] not in str(listed)

    async def test_new_token_works_and_revoked_stops(self, api: Api) -> None:
        """A created token authenticates at once; once revoked it is 401."""
        _, created = await api.call("POST", "/v1/tokens", json={"name": "ci", "role": "reader"})
        works, _ = await api.call("GET", "/v1/models", token=created["secret"])
        revoked, _ = await api.call("DELETE", "/v1/tokens/ci")
        after, body = await api.call("GET", "/v1/models", token=created["secret"])
        expected = (200, 200, 401, "unauthenticated")
        assert expected == (works, revoked, after, _code(body))

    async def test_duplicate_and_unknown(self, api: Api) -> None:
        """A duplicate name is 409 already_exists; revoking an unknown name 404 token_not_found."""
        dup, dup_body = await api.call(
            "POST", "/v1/tokens", json={"name": "reader", "role": "reader"}
        )
        unknown, unknown_body = await api.call("DELETE", "/v1/tokens/nobody")
        expected = (409, "already_exists", 404, "token_not_found")
        assert expected == (dup, _code(dup_body), unknown, _code(unknown_body))

    async def test_admin_cannot_revoke_itself(self, api: Api) -> None:
        """The admin token cannot revoke itself: 403 permission_denied."""
        status, body = await api.call("DELETE", "/v1/tokens/admin")
        expected = (403, "permission_denied")
        assert expected == (status, _code(body))

    async def test_authorization_header_forms(self, api: Api) -> None:
        """A missing header, another scheme or a garbled secret are all 401."""
        secret = api.tokens["reader"]
        answers = [
            await api.call("GET", "/v1/models", token=None, headers=headers)
            for headers in (
                {},
                {"Authorization": f"Basic {secret}"},
                {"Authorization": "Bearer"},
                {"Authorization": f"Bearer {secret}x"},
            )
        ]
        expected = [(401, "unauthenticated")] * 4
        assert expected == [(status, _code(body)) for status, body in answers]


class TestSecrets:
    async def test_hashes_live_in_secrets_db_only(self, api: Api) -> None:
        """secrets.db holds every token hash; registry.db holds no hash and no secret."""
        conn = sqlite3.connect(api.config.secrets_db)
        try:
            stored = {row[0] for row in conn.execute("SELECT hash FROM tokens")}
        finally:
            conn.close()
        hashes = {hash_secret(s) for s in api.tokens.values()}
        registry_bytes = b"".join(
            p.read_bytes() for p in api.config.data_dir.glob("registry.db*") if p.is_file()
        )
        leaked = [v for v in hashes | set(api.tokens.values()) if v.encode() in registry_bytes]
        expected = (True, [])
        assert expected == (hashes <= stored, leaked)

    async def test_admin_token_file_is_private(self, api: Api) -> None:
        """The admin token file is mode 0600."""
        expected = 0o600
        assert expected == stat.S_IMODE(os.stat(api.config.admin_token_file).st_mode)


class TestWritesAnswerRevision:
    @pytest.mark.parametrize(
        "case",
        # webhook writes: tests/central/test_webhooks.py (they need a receiver allowed)
        [
            c
            for c in MATRIX
            if c.method != "GET" and "admin" in c.allowed and not c.path.startswith("/v1/webhooks")
        ],
        ids=lambda c: f"{c.method} {c.path}",
    )
    async def test_every_write_answers_the_revision(self, seeded: Api, case: Any) -> None:
        """Every successful write's answer carries the registry revision as of that write."""
        status, body = await seeded.call(case.method, case.path, json=case.json)
        revision = await seeded.client.app[REGISTRY].revision()
        expected = (case.ok, revision)
        assert expected == (status, body.get("revision"))


class TestUnknownQueryParameters:
    @pytest.mark.parametrize(
        "case",
        [c for c in MATRIX if c.path.startswith("/v1/") and "admin" in c.allowed],
        ids=lambda c: f"{c.method} {c.path}",
    )
    async def test_every_route_refuses_an_unknown_parameter(self, seeded: Api, case: Any) -> None:
        """A query parameter a route does not take is 400 naming it, and writes nothing."""
        before = db_state(seeded.config)
        status, body = await seeded.call(
            case.method, case.path, json=case.json, params={"bogus": "1"}
        )
        expected = (400, "invalid_field", "bogus", before)
        assert expected == (
            status,
            _code(body),
            body["error"].get("field"),
            db_state(seeded.config),
        )

    async def test_expected_in_the_query_of_a_put_is_no_silent_plain_move(
        self, seeded: Api
    ) -> None:
        """``PUT …/aliases/{alias}?expected=N`` (expected belongs in the body) is refused
        instead of moving the alias unconditionally."""
        status, body = await seeded.call(
            "PUT",
            "/v1/models/fraud/aliases/staging",
            json={"version": 2},
            params={"expected": "2"},
        )
        _, alias = await seeded.call("GET", "/v1/models/fraud/aliases/staging")
        expected = (400, "expected", 3)
        assert expected == (status, body["error"].get("field"), alias["version"])


class TestServiceRoutes:
    async def test_healthz(self, seeded: Api) -> None:
        """/healthz needs no token and reports the revision; no replication in tests."""
        status, body = await seeded.call("GET", "/healthz", token=None)
        registry = seeded.client.app[REGISTRY]
        revision = await registry.revision()
        expected = (
            200,
            {
                "status": "ok",
                "revision": revision,
                "revision_hash": registry.revision_hash(),
                "replication": None,
            },
        )
        assert expected == (status, body)

    async def test_metrics_text_format(self, seeded: Api) -> None:
        """/metrics counts requests by route and status and reports the revision."""
        await seeded.call("GET", "/v1/models/fraud")
        await seeded.call("GET", "/v1/models/nope")
        status, text = await seeded.call("GET", "/metrics", token=None)
        revision = await seeded.client.app[REGISTRY].revision()
        requests = 'modelreg_central_requests_total{method="GET",route="/v1/models/{model}"'
        wanted = [
            requests + ',status="200"} 1',
            requests + ',status="404"} 1',
            f"modelreg_central_revision {revision}",
            "modelreg_central_models 1",
            "# TYPE modelreg_central_request_duration_seconds histogram",
        ]
        expected = (200, [True] * len(wanted))
        lines = text.splitlines()
        assert expected == (status, [w in lines for w in wanted])

    async def test_openapi_lists_the_router(self, api: Api) -> None:
        """/openapi.json names exactly the routes of the app's router."""
        _, body = await api.call("GET", "/openapi.json", token=None)
        router = {
            (route.method, route.resource.canonical)
            for route in api.client.app.router.routes()
            if route.resource is not None
        }
        served = {(method.upper(), path) for path, ops in body["paths"].items() for method in ops}
        expected = (router, router)
        assert expected == (served, {(op.method, op.path) for op in OPERATIONS})
        assert body == document()

    def test_openapi_operations_are_well_formed(self) -> None:
        """Operation ids are unique, path parameters are declared and bodies are known schemas."""
        doc = document()
        ops = [(path, op) for path, item in doc["paths"].items() for op in item.values()]
        ids = [op["operationId"] for _, op in ops]
        undeclared = [
            (path, name)
            for path, op in ops
            for name in re.findall(r"{(\w+)}", path)
            if name not in {p["name"] for p in op["parameters"] if p["in"] == "path"}
        ]
        refs = [
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            for _, op in ops
            if "requestBody" in op
        ]
        schemas = doc["components"]["schemas"]
        expected = (len(ids), [], [])
        assert expected == (len(set(ids)), undeclared, [r for r in refs if r not in schemas])

    async def test_docs_name_every_route_and_code(self) -> None:
        """docs/API.md documents every route and every error code with its status."""
        text = DOCS.read_text()
        missing_routes = [
            f"{op.method} {op.path}" for op in OPERATIONS if f"`{op.method} {op.path}`" not in text
        ]
        missing_codes = [
            code for code in CODES if f"| `{code}` | {HTTP_STATUS[code]} |" not in text
        ]
        expected: tuple[list[str], list[str]] = ([], [])
        assert expected == (missing_routes, missing_codes)


class TestErrors:
    async def test_unknown_route(self, api: Api) -> None:
        """An unknown path is 404 not_found in the JSON error body."""
        status, body = await api.call("GET", "/v1/nowhere")
        expected = (404, "not_found")
        assert expected == (status, _code(body))

    async def test_wrong_method(self, api: Api) -> None:
        """A known path with the wrong method is 405 method_not_allowed."""
        status, body = await api.call("PUT", "/v1/models")
        expected = (405, "method_not_allowed")
        assert expected == (status, _code(body))

    async def test_wrong_method_names_the_allowed_ones(self, api: Api) -> None:
        """A 405 keeps aiohttp's Allow header; HEAD is not served."""
        async with api.client.request("DELETE", "/v1/events") as answer:
            allow = answer.headers.get("Allow")
        head, _ = await api.call("HEAD", "/healthz", token=None)
        expected = ("GET", 405)
        assert expected == (allow, head)

    async def test_scoped_admin_cannot_manage_tokens(self, api: Api) -> None:
        """Token management needs an admin token that is not scoped to models."""
        _, created = await api.call(
            "POST", "/v1/tokens", json={"name": "sub", "role": "admin", "models": ["a*"]}
        )
        status, body = await api.call(
            "POST", "/v1/tokens", token=created["secret"], json={"name": "x", "role": "admin"}
        )
        expected = (403, "permission_denied")
        assert expected == (status, _code(body))

    async def test_unserialisable_details_still_answer(
        self, api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An error whose details are not JSON still answers its code and message."""

        async def odd(*args: Any, **kwargs: Any) -> Any:
            raise ModelNotFound("no model 'x'", model=object())

        monkeypatch.setattr(api.client.app[REGISTRY], "get_model", odd)
        with caplog.at_level(logging.ERROR, logger="modelreg.central.app"):
            status, body = await api.call("GET", "/v1/models/x")
        expected = (404, {"error": {"code": "model_not_found", "message": "no model 'x'"}})
        assert expected == (status, body)

    async def test_unexpected_exception_is_generic_500(
        self, api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Any other exception is 500 internal with a generic message; the detail is logged."""

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("sqlite3 says: secret driver detail")

        monkeypatch.setattr(api.client.app[REGISTRY], "get_model", broken)
        with caplog.at_level(logging.ERROR, logger="modelreg.central.app"):
            status, body = await api.call("GET", "/v1/models/fraud")
        expected = (500, {"error": {"code": "internal", "message": "internal error"}}, True)
        assert expected == (status, body, "secret driver detail" in caplog.text)


class TestLifecycle:
    async def test_admin_token_survives_restart(self, aiohttp_client: Any, api: Api) -> None:
        """A second start reuses the admin token file and the tokens made before."""
        from modelreg.central.app import create_app

        await api.client.close()
        client = await aiohttp_client(create_app(api.config))
        again = Api(client, api.config, dict(api.tokens))
        answers = [await again.call("GET", "/v1/models", token=t) for t in ("admin", "reader")]
        expected = [200, 200]
        assert expected == [status for status, _ in answers]

    async def test_heartbeat_runs(self, aiohttp_client: Any, tmp_path: Path) -> None:
        """With a heartbeat interval the heartbeat row appears and keeps moving."""
        from modelreg.central.app import create_app
        from modelreg.central.config import CentralConfig

        config = CentralConfig(data_dir=tmp_path / "hb", heartbeat_interval_s=0.05)
        await aiohttp_client(create_app(config))
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            conn = sqlite3.connect(f"file:{config.registry_db}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT at FROM heartbeat WHERE id = 1").fetchone()
            finally:
                conn.close()
            if row is not None:
                seen.add(row[0])
            await asyncio.sleep(0.02)
        expected = 2
        assert expected == len(seen)


def test_db_state_reads_counts(tmp_path: Path) -> None:
    """db_state (used by the bad-input tests) counts rows of a real registry file."""
    from modelreg.central.config import CentralConfig
    from modelreg.central.schema import migrate

    config = CentralConfig(data_dir=tmp_path)
    conn = sqlite3.connect(config.registry_db, isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO meta VALUES ('k', 'v')")
    conn.close()
    state = db_state(config)
    expected = (1, 0, 0)
    assert expected == (state["meta"], state["models"], state["revision"])
