"""Artifact and dataset URIs that would be unsafe on every node are refused with a clear error
and change nothing; schemes and roots can be restricted by configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from modelreg.central.app import create_app
from modelreg.central.config import CentralConfig, ConfigError, load
from tests.central.conftest import SHA, Api, db_state

VERSIONS = "/v1/models/fraud/versions"

UNSAFE = [
    ("system file", "file:///etc/passwd"),
    ("system dir", "file:///proc/self/environ"),
    ("relative traversal", "file://../../etc/passwd"),
    ("file host", "file://evil.example/srv/models/m.bin"),
    ("file relative", "file:models/m.bin"),
    ("dot segments", "file:///srv/models/../../etc/shadow"),
    ("encoded dot segments", "file:///srv/models/%2e%2e/%2E%2E/etc/shadow"),
    ("encoded slash traversal", "s3://models/fraud/..%2f..%2fother/m.bin"),
    ("bucket traversal", "s3://../../x"),
    ("bucket dot", "s3://./x"),
    ("empty bucket", "s3:///x"),
    ("gs traversal", "gs://bucket/a/../../b"),
    ("backslash", "file:///srv/models\\..\\..\\etc\\passwd"),
    ("right-to-left override", "s3://models/fraud/\u202egnp.exe"),
    ("bidi isolate", "s3://models/fraud/\u2066m.bin"),
    ("zero width space", "s3://models/fr\u200baud/m.bin"),
    ("encoded bidi", "s3://models/fraud/%E2%80%AEm.bin"),
    ("encoded newline", "s3://models/fraud/m%0a.bin"),
    ("nbsp", "s3://models/fraud/m\u00a0.bin"),
    ("raw space", "s3://models/fraud/m 1.bin"),
    ("user and password", "https://user:pass@host/x"),
    ("user only", "https://ghp_secret@host/x"),
    ("s3 with keys", "s3://AKIAEXAMPLE:secret@models/fraud/m.bin"),
    (
        "presigned s3",
        "https://models.s3.amazonaws.com/m.bin?X-Amz-Signature=abc&X-Amz-Credential=k",
    ),
    ("azure sas", "https://acct.blob.core.windows.net/c/m.bin?sv=2024&sig=abc"),
]


def _version(uri: str, **extra: Any) -> dict[str, Any]:
    return {"artifact_uri": uri, "sha256": SHA, **extra}


class TestUnsafeURIs:
    @pytest.mark.parametrize(("why", "uri"), UNSAFE, ids=[u[0] for u in UNSAFE])
    async def test_refused(self, seeded: Api, why: str, uri: str) -> None:
        """Each unsafe artifact URI is 400 invalid_uri naming the field, and nothing changes."""
        before = db_state(seeded.config)
        status, body = await seeded.call("POST", VERSIONS, json=_version(uri))
        error = body.get("error", {}) if isinstance(body, dict) else {}
        expected = (400, "invalid_uri", "artifact_uri", before)
        assert expected == (
            status,
            error.get("code"),
            error.get("field"),
            db_state(seeded.config),
        ), body

    async def test_message_says_why(self, seeded: Api) -> None:
        """The message names the problem (credentials) and never echoes the secret."""
        _, body = await seeded.call("POST", VERSIONS, json=_version("https://u:hunter2@h/x"))
        message = body["error"]["message"]
        expected = (True, False)
        assert expected == ("credentials" in message, "hunter2" in str(body))

    @pytest.mark.parametrize(
        "uri",
        [
            "https://u:hunter2@h/x",
            "s3://models/\u202ex",
            "file://../../etc/passwd",
        ],
    )
    async def test_dataset_uri_too(self, seeded: Api, uri: str) -> None:
        """The lineage's dataset_uri is refused on the same grounds."""
        status, body = await seeded.call(
            "POST", VERSIONS, json=_version("s3://models/fraud/9", dataset_uri=uri)
        )
        expected = (400, "invalid_uri", "dataset_uri")
        assert expected == (status, body["error"]["code"], body["error"]["field"])

    @pytest.mark.parametrize(
        "uri",
        [
            "s3://models/fraud/9/model.bin",
            "file:///srv/models/fraud/9.bin",
            "file://localhost/srv/models/fraud/9.bin",
            "file:///tmp/pytest-of-x/my%20model.bin",
            "gs://bucket/a/b.c/model..bin",
            "https://huggingface.co/org/model/resolve/main/model.safetensors?download=true",
            "hf://org/model@rev",
            "s3://models/fraud/modèle-é.bin",
        ],
    )
    async def test_safe_uris_pass(self, seeded: Api, uri: str) -> None:
        """Ordinary artifact URIs (unicode letters, dots inside names) are registered."""
        status, body = await seeded.call("POST", VERSIONS, json=_version(uri))
        expected = (201, uri)
        assert expected == (status, body.get("artifact", {}).get("uri")), body


@pytest.fixture
async def restricted(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], config: CentralConfig
) -> Api:
    """A central that takes only s3 URIs under two roots."""
    config = replace(
        config,
        artifact_uri_schemes=("s3", "file"),
        artifact_uri_roots=("s3://models-prod/fraud", "file:///srv/models/"),
    )
    client = await aiohttp_client(create_app(config))
    api = Api(client, config, {"admin": config.admin_token_file.read_text().strip()})
    status, _ = await api.call("POST", "/v1/models", json={"name": "fraud"})
    assert 201 == status
    return api


class TestConfiguredPolicy:
    @pytest.mark.parametrize(
        "uri",
        [
            "s3://models-prod/fraud/1.bin",
            "s3://models-prod/fraud",
            "file:///srv/models/fraud.bin",
        ],
    )
    async def test_inside_roots(self, restricted: Api, uri: str) -> None:
        """A URI under a configured root is registered."""
        status, body = await restricted.call("POST", VERSIONS, json=_version(uri))
        expected = 201
        assert expected == status, body

    @pytest.mark.parametrize(
        "uri",
        [
            "s3://models-prod/fraudulent/1.bin",  # a prefix, not a path boundary
            "s3://models-dev/fraud/1.bin",
            "file:///srv/modelsx/1.bin",
            "gs://models-prod/fraud/1.bin",  # a scheme not configured
            "https://models-prod/fraud/1.bin",
        ],
    )
    async def test_outside_roots(self, restricted: Api, uri: str) -> None:
        """A URI outside every root, or of a scheme not configured, is 400 invalid_uri."""
        status, body = await restricted.call("POST", VERSIONS, json=_version(uri))
        expected = (400, "invalid_uri")
        assert expected == (status, body["error"]["code"]), body

    def test_settings_from_environment(self) -> None:
        """Both settings come from REG_* variables as comma-separated lists."""
        config = load(
            environ={
                "REG_ARTIFACT_URI_SCHEMES": "s3, gs",
                "REG_ARTIFACT_URI_ROOTS": "s3://a/b,gs://c/",
            }
        )
        expected = (("s3", "gs"), ("s3://a/b", "gs://c/"))
        assert expected == (config.artifact_uri_schemes, config.artifact_uri_roots)

    @pytest.mark.parametrize(
        "environ",
        [
            {"REG_ARTIFACT_URI_SCHEMES": "s3,ftp"},
            {"REG_ARTIFACT_URI_ROOTS": "s3://../x"},
            {"REG_ARTIFACT_URI_ROOTS": "relative/path"},
            {"REG_ARTIFACT_URI_SCHEMES": "s3", "REG_ARTIFACT_URI_ROOTS": "gs://b/"},
        ],
    )
    def test_bad_settings_are_refused(self, environ: dict[str, str]) -> None:
        """An unknown scheme or an unsafe root, or a root of no allowed scheme, is a
        ConfigError at start."""
        with pytest.raises(ConfigError):
            load(environ=environ)
