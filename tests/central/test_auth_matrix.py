"""Every route x every principal (each role, no token, a bad token) -> the expected status,
and scoped tokens outside their scope."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.appkeys import AUTH, DISPATCHER, WEBHOOKS
from modelreg.central.config import CentralConfig
from modelreg.central.openapi import OPERATIONS
from tests.central.conftest import BAD_TOKEN, Api, loopback_config

PRINCIPALS = ("reader", "publisher", "approver", "deployer", "admin", "none", "bad")
READ = frozenset({"reader", "publisher", "approver", "deployer", "admin"})
PUBLISH = frozenset({"publisher", "approver", "deployer", "admin"})
APPROVE = frozenset({"approver", "admin"})
DEPLOY = frozenset({"deployer", "admin"})
ADMIN = frozenset({"admin"})
PUBLIC = frozenset(PRINCIPALS)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    route: str
    allowed: frozenset[str]
    ok: int = 200
    json: Any = None
    #: The answer is a stream that never ends: check the status only.
    stream: bool = False


M = "/v1/models/{model}"
N = "/v1/models/{model}/versions/{version}"
A = "/v1/models/{model}/aliases/{alias}"
#: A webhook's path (WEBHOOK becomes the id the fixture created) and its route.
W, WR = "/v1/webhooks/WEBHOOK", "/v1/webhooks/{webhook}"

CASES = (
    Case("GET", "/healthz", "/healthz", PUBLIC),
    Case("GET", "/metrics", "/metrics", PUBLIC),
    Case("GET", "/openapi.json", "/openapi.json", PUBLIC),
    Case("POST", "/v1/models", "/v1/models", PUBLISH, 201, {"name": "new-model"}),
    Case("GET", "/v1/models", "/v1/models", READ),
    Case("GET", "/v1/models/fraud", M, READ),
    Case("PATCH", "/v1/models/fraud", M, PUBLISH, json={"description": "x"}),
    Case(
        "POST",
        "/v1/models/fraud/versions",
        M + "/versions",
        PUBLISH,
        201,
        {"artifact_uri": "s3://models/fraud/4", "sha256": "d" * 64},
    ),
    Case("GET", "/v1/models/fraud/versions", M + "/versions", READ),
    Case("GET", "/v1/models/fraud/versions/1", N, READ),
    Case("PATCH", "/v1/models/fraud/versions/1", N, PUBLISH, json={"description": "y"}),
    Case("POST", "/v1/models/fraud/versions/2/approve", N + "/approve", APPROVE, json={}),
    Case("POST", "/v1/models/fraud/versions/2/reject", N + "/reject", APPROVE, json={}),
    Case("POST", "/v1/models/fraud/versions/2/archive", N + "/archive", ADMIN, json={}),
    Case("PUT", "/v1/models/fraud/aliases/staging", A, PUBLISH, json={"version": 1}),
    Case("PUT", "/v1/models/fraud/aliases/production", A, DEPLOY, json={"version": 1}),
    Case("DELETE", "/v1/models/fraud/aliases/staging", A, PUBLISH),
    Case("DELETE", "/v1/models/fraud/aliases/production", A, DEPLOY),
    Case("GET", "/v1/models/fraud/aliases/production", A, READ),
    Case("POST", "/v1/models/fraud/aliases/staging/rollback", A + "/rollback", PUBLISH, json={}),
    Case("POST", "/v1/models/fraud/aliases/production/rollback", A + "/rollback", DEPLOY),
    Case("GET", "/v1/models/fraud/aliases/production/history", A + "/history", READ),
    Case("GET", "/v1/resolve/fraud/production", "/v1/resolve/{model}/{ref}", READ),
    Case("GET", "/v1/versions", "/v1/versions", READ),
    Case("GET", "/v1/events", "/v1/events", READ),
    Case("GET", "/v1/events/stream", "/v1/events/stream", READ, stream=True),
    Case("GET", "/v1/audit/verify", "/v1/audit/verify", ADMIN),
    Case("POST", "/v1/tokens", "/v1/tokens", ADMIN, 201, {"name": "new-token", "role": "reader"}),
    Case("GET", "/v1/tokens", "/v1/tokens", ADMIN),
    Case("DELETE", "/v1/tokens/seed", "/v1/tokens/{name}", ADMIN),
    Case("POST", "/v1/webhooks", "/v1/webhooks", ADMIN, 201, {"url": "http://127.0.0.1:9/"}),
    Case("GET", "/v1/webhooks", "/v1/webhooks", ADMIN),
    Case("GET", W, WR, ADMIN),
    Case("PATCH", W, WR, ADMIN, json={"description": "x"}),
    Case("DELETE", W, WR, ADMIN),
    Case("POST", W + "/test", WR + "/test", ADMIN, json={}),
    Case("GET", W + "/deliveries", WR + "/deliveries", ADMIN),
    Case("GET", W + "/deliveries/1", WR + "/deliveries/{delivery}", ADMIN),
    Case(
        "POST",
        W + "/deliveries/1/redeliver",
        WR + "/deliveries/{delivery}/redeliver",
        ADMIN,
        json={},
    ),
)


@pytest.fixture
def config(tmp_path: Path) -> CentralConfig:
    """Webhooks may target loopback here: the matrix's webhook points at a closed port."""
    return loopback_config(tmp_path)


@pytest.fixture
async def hooked(seeded: Api) -> Api:
    """``seeded`` with a webhook (to a closed port) and its test delivery, number 1."""
    sub = (await seeded.client.app[WEBHOOKS].create("admin", "http://127.0.0.1:9/")).subscription
    await seeded.client.app[DISPATCHER].test(sub)
    seeded.webhook = sub.id  # type: ignore[attr-defined]
    return seeded


def _token(principal: str) -> str | None:
    return {"none": None, "bad": BAD_TOKEN}.get(principal, principal)


def _expected(case: Case, principal: str) -> tuple[int, str | None]:
    if principal in case.allowed:
        return case.ok, None
    if principal in ("none", "bad"):
        return 401, "unauthenticated"
    return 403, "permission_denied"


class TestMatrix:
    def test_every_route_is_covered(self) -> None:
        """The matrix holds every route the API documents, and nothing else."""
        expected = {(op.method, op.path) for op in OPERATIONS}
        assert expected == {(c.method, c.route) for c in CASES}

    @pytest.mark.parametrize("principal", PRINCIPALS)
    @pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
    async def test_route_and_principal(self, hooked: Api, case: Case, principal: str) -> None:
        """Each principal gets the success status where its role allows, else 401 or 403."""
        path = case.path.replace("WEBHOOK", hooked.webhook)  # type: ignore[attr-defined]
        token = _token(principal)
        if case.stream and principal in case.allowed:
            assert token is not None
            headers = {"Authorization": f"Bearer {hooked.tokens[token]}"}
            async with hooked.client.get(path, headers=headers) as answer:
                status, code = answer.status, None
        else:
            status, body = await hooked.call(case.method, path, token=token, json=case.json)
            code = body["error"]["code"] if isinstance(body, dict) and "error" in body else None
        assert _expected(case, principal) == (status, code)


class TestScopes:
    @pytest.fixture
    async def scoped(self, seeded: Api) -> Api:
        """``seeded`` plus a deployer token scoped to ``other-*`` models, and one such model."""
        auth = seeded.client.app[AUTH]
        secret = (await auth.create("admin", "scoped", "deployer", ["other-*"])).secret
        seeded.tokens["scoped"] = secret
        status, body = await seeded.call("POST", "/v1/models", json={"name": "other-a"})
        assert status == 201, body
        return seeded

    @pytest.mark.parametrize(
        ("method", "path", "json"),
        [
            ("GET", "/v1/models/fraud", None),
            ("PATCH", "/v1/models/fraud", {"description": "x"}),
            ("POST", "/v1/models", {"name": "fraud-2"}),
            ("POST", "/v1/models/fraud/versions", {"artifact_uri": "s3://m/x", "sha256": "e" * 64}),
            ("GET", "/v1/models/fraud/versions/1", None),
            ("PUT", "/v1/models/fraud/aliases/production", {"version": 1}),
            ("GET", "/v1/resolve/fraud/production", None),
            ("GET", "/v1/versions?model=fraud", None),
            ("GET", "/v1/events?model=fraud", None),
            ("GET", "/v1/tokens", None),
            ("GET", "/v1/webhooks", None),
        ],
    )
    async def test_outside_scope_is_denied(
        self, scoped: Api, method: str, path: str, json: Any
    ) -> None:
        """A scoped token gets 403 permission_denied on a model outside its globs."""
        status, body = await scoped.call(method, path, token="scoped", json=json)
        expected = (403, "permission_denied")
        assert expected == (status, body["error"]["code"])

    async def test_inside_scope_is_allowed(self, scoped: Api) -> None:
        """A scoped token works on the models its globs match."""
        status, _ = await scoped.call(
            "POST",
            "/v1/models/other-a/versions",
            token="scoped",
            json={"artifact_uri": "s3://m/a", "sha256": "e" * 64},
        )
        expected = 201
        assert expected == status

    async def test_lists_are_filtered_to_the_scope(self, scoped: Api) -> None:
        """Model lists, version searches and the event log leave out models outside the
        token's scope (and token events, which belong to no model)."""
        _, models = await scoped.call("GET", "/v1/models", token="scoped")
        _, versions = await scoped.call("GET", "/v1/versions", token="scoped")
        _, events = await scoped.call("GET", "/v1/events", token="scoped")
        expected = (["other-a"], [], [("model.create", "other-a")])
        assert expected == (
            [m["name"] for m in models["items"]],
            [v["model"] for v in versions["items"]],
            [(e["action"], e["subject"]) for e in events["items"]],
        )
