"""``modelreg.central.client.CentralClient`` against a real central: answers and errors mapped
back."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.app import create_app
from modelreg.central.client import CentralClient
from modelreg.central.config import CentralConfig
from modelreg.cli.context import exit_code_for
from modelreg.errors import (
    CODES,
    AliasConflict,
    Conflict,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from tests.cli.conftest import Reg
from tests.procs import free_port


class TestErrors:
    def test_error_answer_raises_the_server_class_with_details(self, reg: Reg) -> None:
        """A 404 for a model raises ModelNotFound carrying the model name."""
        with pytest.raises(ModelNotFound) as caught:
            reg.client().get_model("nope")
        assert caught.value.details.get("model") == "nope"

    def test_compare_and_set_mismatch_raises_alias_conflict(self, reg: Reg) -> None:
        """A stale ``expected`` raises AliasConflict and leaves the alias."""
        reg.seed_version()
        admin = reg.client()
        admin.set_alias("fraud", "staging", 1)
        with pytest.raises(AliasConflict):
            admin.set_alias("fraud", "staging", 1, expected=None)
        assert admin.get_alias("fraud", "staging")["version"] == 1

    def test_missing_token_raises_unauthenticated(self, reg: Reg) -> None:
        """No token: Unauthenticated."""
        with pytest.raises(Unauthenticated):
            CentralClient(reg.url).list_models()

    def test_insufficient_role_raises_permission_denied(self, reg: Reg) -> None:
        """A reader creating a model: PermissionDenied."""
        with pytest.raises(PermissionDenied):
            reg.client("reader").create_model("fraud")

    def test_refused_connection_raises_unavailable_naming_the_url(self) -> None:
        """Nothing listening: Unavailable whose one-line message names the URL."""
        url = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(Unavailable) as caught:
            CentralClient(url, "t", timeout=2).health()
        assert url in str(caught.value)
        assert "\n" not in str(caught.value)

    def test_silent_server_raises_unavailable_after_the_timeout(self) -> None:
        """A server that accepts but never answers: Unavailable saying no answer came."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            with pytest.raises(Unavailable) as caught:
                CentralClient(url, "t", timeout=0.2).health()
        assert f"cannot reach central at {url}: no answer within 0.2 s" == str(caught.value)

    def test_url_must_be_http(self) -> None:
        """A URL without an http(s) scheme is refused at once."""
        with pytest.raises(InvalidRequest):
            CentralClient("ftp://example.org")


class TestRoutes:
    def test_push_reports_created_then_idempotent_retry(self, reg: Reg) -> None:
        """``push`` says created=True first, False for the same run id and digest."""
        reg.client().create_model("fraud")
        fields = {"run_id": "r1"}
        first = reg.client().push("fraud", "s3://m/1", "a" * 64, **fields)
        second = reg.client().push("fraud", "s3://m/1", "a" * 64, **fields)
        assert (first[1], second[1], second[0]["version"]) == (True, False, 1)

    def test_delete_alias_with_expected_and_resolve(self, reg: Reg) -> None:
        """Resolve follows an alias; delete with a matching ``expected`` unsets it."""
        reg.seed_version()
        admin = reg.client()
        admin.set_alias("fraud", "staging", 1)
        assert admin.resolve("fraud", "staging")["version"]["version"] == 1
        move = admin.delete_alias("fraud", "staging", expected=1)
        assert (move["from_version"], move["to_version"], move["action"]) == (1, None, "delete")

    def test_update_model_and_version(self, reg: Reg) -> None:
        """PATCH routes change only the given fields."""
        reg.seed_version()
        admin = reg.client()
        admin.update_model("fraud", owner="risk")
        admin.update_version("fraud", 1, description="v1")
        model, version = admin.get_model("fraud"), admin.get_version("fraud", 1)
        assert (model["owner"], version["description"]) == ("risk", "v1")

    def test_iter_models_follows_pages(self, reg: Reg) -> None:
        """``iter_models`` yields every model across pages."""
        admin = reg.client()
        for i in range(3):
            admin.create_model(f"m{i}")
        assert [m["name"] for m in admin.iter_models()] == ["m0", "m1", "m2"]

    def test_service_routes(self, reg: Reg) -> None:
        """healthz, openapi and metrics answer."""
        client = reg.client()
        assert client.health()["status"] == "ok"
        assert "/v1/models" in client.openapi()["paths"]
        assert "# TYPE" in client.metrics()


class TestExitCodes:
    @pytest.mark.parametrize("code", sorted(CODES))
    def test_every_error_code_has_its_documented_exit_code(self, code: str) -> None:
        """not found 3, conflict/permission/auth 4, unavailable 5, bad request 2, else 1."""
        error = CODES[code]("x")
        if isinstance(error, NotFound):
            expected = 3
        elif isinstance(error, Conflict | PermissionDenied | Unauthenticated):
            expected = 4
        elif isinstance(error, Unavailable):
            expected = 5
        elif isinstance(error, InvalidRequest):
            expected = 2
        else:
            expected = 1
        assert expected == exit_code_for(error)


class TestCoverage:
    def test_every_route_of_central_has_a_client_method(self, tmp_path: Path) -> None:
        """Each (method, path) central routes is what some CentralClient method sends."""
        sent: list[tuple[str, str]] = []

        def record(
            self: CentralClient, method: str, path: str, query: Any = None, body: Any = None
        ) -> tuple[int, Any]:
            sent.append((method, path))
            return 200, {"items": [], "next_page_token": None}

        client = CentralClient("http://127.0.0.1:9")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(CentralClient, "send", record)
            patch.setattr(CentralClient, "metrics", lambda self: record(self, "GET", "/metrics"))

            def stream(self: CentralClient, *args: Any) -> Iterator[Any]:
                sent.append(("GET", "/v1/events/stream"))
                yield from ()

            patch.setattr(CentralClient, "_stream", stream)
            client.health(), client.openapi(), client.metrics()
            client.create_model("m"), client.list_models(), client.get_model("m")
            client.update_model("m", owner="o"), client.push("m", "s3://x", "a" * 64)
            client.list_versions("m"), client.get_version("m", 1)
            client.update_version("m", 1, description="d")
            client.approve("m", 1), client.reject("m", 1), client.archive("m", 1)
            client.set_alias("m", "a", 1), client.delete_alias("m", "a"), client.get_alias("m", "a")
            client.rollback("m", "a"), client.alias_history("m", "a"), client.resolve("m", "a")
            client.search_versions(), client.events(), client.verify_audit()
            client.create_token("t", "reader"), client.list_tokens(), client.revoke_token("t")
            list(client.follow_events(after=0, reconnect=False))
            w = "wh_0123456789abcdef"
            client.create_webhook("http://127.0.0.1:9/"), client.list_webhooks()
            client.get_webhook(w), client.update_webhook(w, description="d")
            client.delete_webhook(w), client.test_webhook(w), client.deliveries(w)
            client.get_delivery(w, 1), client.redeliver(w, 1)
        app = create_app(CentralConfig(data_dir=tmp_path, replica_url=None))
        routes = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }

        def template(method: str, path: str) -> tuple[str, str] | None:
            for route_method, canonical in routes:
                pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(canonical))
                if route_method == method and re.fullmatch(pattern, path):
                    return route_method, canonical
            return None

        covered = {template(method, path) for method, path in sent}
        assert routes == covered
