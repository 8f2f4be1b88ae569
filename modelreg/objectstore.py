"""The one way modelreg opens object storage: a URL in the form the docs give, to an obstore store.

Every object-store access of the project (artifacts, the node fetcher, the writer lease) goes
through :func:`open_store`, so one library (`obstore`, the Rust ``object_store`` crate's
bindings: S3 and S3-compatible, GCS, Azure, local files, HTTP; async; multipart; conditional
puts) and one URL convention serve them all:

=============================================================  =================================
URL                                                            store
=============================================================  =================================
``file:///abs/path``                                           a directory (created on demand)
``s3://bucket/prefix?region=R``                                AWS S3, virtual-hosted addressing
``s3://bucket/prefix?endpoint=URL&region=R&forcePathStyle=true``  any S3-compatible store (MinIO,
                                                               Ceph, R2, moto); ``http://``
                                                               endpoints are allowed
``gs://bucket/prefix``, ``az://container/prefix``              GCS, Azure (obstore's own parsing)
``http(s)://host/path``                                        read-only HTTP
=============================================================  =================================

The query keys are the replica URL's (docs/OPERATIONS.md, "Replica URLs"), so one base URL
works for Litestream and for this module. Credentials never come from the URL: obstore reads the
provider's standard chain (``AWS_*`` variables, web identity, instance metadata; GCS and Azure
likewise). ``AWS_CA_BUNDLE`` (which this machine sets, and which Litestream cannot take) becomes
the store's root certificate.

obstore is imported here only: the serving import (``from modelreg import Client``) never loads
this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from modelreg.errors import InvalidURI

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, S3Config

__all__ = ["CREDENTIAL_QUERY_KEYS", "SCHEMES", "open_store", "refuse_credentials", "split_url"]

#: URL schemes :func:`open_store` accepts.
SCHEMES = ("file", "s3", "gs", "az", "abfs", "http", "https")
#: Query keys (compared in lower case) that carry a credential: presigned S3 and GCS URLs, Azure
#: SAS tokens, OAuth access tokens.
CREDENTIAL_QUERY_KEYS = frozenset(
    {
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
        "signature",
        "sig",
        "access_token",
    }
)


def refuse_credentials(url: str, what: str = "object store URL") -> None:
    """Raise :class:`~modelreg.errors.InvalidURI` when ``url`` carries a credential.

    A credential is user information (``user:pass@``, or a bare ``token@``; for ``abfs`` a
    bare ``container@`` is the container, not a credential) or a query key of
    :data:`CREDENTIAL_QUERY_KEYS`. The message names ``what`` and never repeats the URL.
    """
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
    if userinfo is not None and not (parts.scheme in ("abfs", "abfss") and ":" not in userinfo):
        found = "user information (user:password@)"
    elif any(key.lower() in CREDENTIAL_QUERY_KEYS for key in parse_qs(parts.query)):
        found = "a signature or token in the query (a presigned URL)"
    else:
        return
    raise InvalidURI(
        f"{what}: credentials do not belong in the URL ({found}); the provider's standard "
        "chain (AWS_* variables, web identity, instance metadata) supplies them"
    )


def split_url(url: str) -> tuple[str, str, str, dict[str, str]]:
    """``(scheme, bucket or host, prefix without slashes, query)`` of a store URL.

    Raises :class:`~modelreg.errors.InvalidURI` for a scheme not in :data:`SCHEMES`, a URL
    with credentials in it, or a ``file:`` URL that is not absolute.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidURI(
            f"object store URL {url!r}: the scheme must be one of {', '.join(SCHEMES)}"
        )
    refuse_credentials(url)
    if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise InvalidURI(f"object store URL {url!r}: use file:///absolute/path")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return parts.scheme, parts.netloc, parts.path.strip("/"), query


def open_store(url: str, environ: Mapping[str, str] | None = None) -> ObjectStore:
    """The obstore store for ``url`` (see the module docstring); no request is made.

    ``environ`` supplies ``AWS_CA_BUNDLE`` only (credentials are the library's business).
    Raises :class:`~modelreg.errors.InvalidURI` for a URL this module does not take.
    """
    from obstore.store import HTTPStore, LocalStore, S3Store, from_url

    scheme, bucket, prefix, query = split_url(url)
    client: ClientConfig = {}
    bundle = (environ or {}).get("AWS_CA_BUNDLE")
    if bundle and Path(bundle).is_file():
        # obstore takes the PEM text itself (0.12: a path is "No certificates found")
        client["root_certificate"] = Path(bundle).read_text()
    if scheme == "file":
        root = Path("/" + prefix)
        root.mkdir(parents=True, exist_ok=True)
        return LocalStore(root)
    if scheme == "s3":
        if not bucket:
            raise InvalidURI(f"object store URL {url!r}: s3://bucket/prefix")
        config: S3Config = {}
        if "endpoint" in query:
            config["endpoint"] = query["endpoint"]
        if "region" in query:
            config["region"] = query["region"]
        if query.get("forcePathStyle", "").lower() == "true":
            config["virtual_hosted_style_request"] = False
        if config.get("endpoint", "").startswith("http://"):
            client["allow_http"] = True
        return S3Store(bucket, prefix=prefix or None, config=config, client_options=client)
    if scheme in ("http", "https"):
        return HTTPStore.from_url(url, client_options=client)
    store: ObjectStore = from_url(url, client_options=client)
    return store
