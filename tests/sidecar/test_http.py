"""The JSON/HTTP front end of a real sidecar: same answers as the socket, health, metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.procs import get_json, wait_for
from tests.sidecar.helpers import SidecarProc, http_get, short_dir, start_sidecar

pytestmark = pytest.mark.integration


class TestRoutes:
    @pytest.mark.parametrize(
        ("path", "request_"),
        [
            (
                "/v1/resolve/fraud/production",
                {"op": "resolve", "model": "fraud", "ref": "production"},
            ),
            ("/v1/resolve/fraud/2", {"op": "resolve", "model": "fraud", "ref": 2}),
            ("/v1/models/fraud", {"op": "get", "model": "fraud"}),
            ("/v1/models", {"op": "list"}),
        ],
    )
    def test_same_result_as_the_socket(
        self, offline_sidecar: SidecarProc, path: str, request_: dict[str, object]
    ) -> None:
        """Each route answers the socket's result, JSON-encoded, with status 200."""
        status, body = http_get(offline_sidecar.http_socket, path)
        answer = json.loads(body)
        expected = offline_sidecar.ask(request_)
        assert (200, True, expected["result"], expected["revision"]) == (
            status,
            answer["ok"],
            answer["result"],
            answer["revision"],
        )

    @pytest.mark.parametrize(
        ("path", "status", "code"),
        [
            ("/v1/resolve/fraud/staging", 404, "alias_not_found"),
            ("/v1/resolve/nope/1", 404, "model_not_found"),
            ("/v1/models/nope", 404, "model_not_found"),
            ("/v1/resolve/fraud/production?min_revision=x", 400, "invalid_field"),
            ("/v1/resolve/fraud/production?min_revision=999999&wait_ms=50", 504, "timeout"),
            ("/v1/nothing/here", 404, "not_found"),
        ],
    )
    def test_errors(self, offline_sidecar: SidecarProc, path: str, status: int, code: str) -> None:
        """Errors answer the JSON error body with the status of their code."""
        got_status, body = http_get(offline_sidecar.http_socket, path)
        assert (status, False, code) == (
            got_status,
            json.loads(body)["ok"],
            json.loads(body)["error"]["code"],
        )

    def test_status_and_healthz(self, offline_sidecar: SidecarProc) -> None:
        """/v1/status carries the status result; /healthz says ready."""
        status, body = http_get(offline_sidecar.http_socket, "/v1/status")
        assert (200, 3) == (status, json.loads(body)["result"]["models"])
        status, health = offline_sidecar.healthz()
        assert (200, True) == (status, health["ready"])

    def test_metrics(self, offline_sidecar: SidecarProc) -> None:
        """/metrics is Prometheus text with lookups by op and result, the histogram and gauges."""
        offline_sidecar.resolve("fraud", "production")
        offline_sidecar.resolve("fraud", "nope")
        status, text = http_get(offline_sidecar.http_socket, "/metrics")
        assert 200 == status
        for pattern in (
            r'reg_sidecar_lookups_total\{op="resolve",result="ok"\} [1-9]',
            r'reg_sidecar_lookups_total\{op="resolve",result="alias_not_found"\} [1-9]',
            r'reg_sidecar_lookup_seconds_bucket\{le="\+Inf"\} [1-9]',
            r"reg_sidecar_revision [1-9]",
            r"reg_sidecar_age_seconds ",
            r"reg_sidecar_connections ",
            r"reg_sidecar_reloads_total [1-9]",
        ):
            assert re.search(pattern, text), pattern


class TestLoopbackPort:
    def test_http_port(self, tmp_path: Path) -> None:
        """--http-port 0 serves the same routes on 127.0.0.1 (the port is announced)."""
        sidecar = start_sidecar(
            (tmp_path / "none").as_uri(), sock_dir=short_dir(), extra_args=["--http-port", "0"]
        )
        try:
            # the line is printed once both servers listen, just after the socket answers
            match = wait_for(
                lambda: re.search(r"http://127\.0\.0\.1:(\d+)", sidecar.log()),
                what="the announced port",
            )
            status = get_json(f"http://127.0.0.1:{match.group(1)}/v1/status")
            assert status["result"]["ready"] is False
        finally:
            sidecar.stop()
