"""modelreg: an ML model registry whose node sidecars answer in microseconds.

The serving import is this package's top level, and it is light: it loads the client library
(:mod:`modelreg.sidecar.client`, msgpack and the standard library) and the exception tree
(:mod:`modelreg.errors`), never aiohttp, the central service or the CLI::

    from modelreg import Client, ModelNotFound

    with Client("/run/modelreg/sidecar.sock") as registry:
        model = registry.resolve("churn", "production")

Everything else keeps its module path: ``modelreg.central.*`` (the writer service),
``modelreg.sidecar.*`` (the node daemon and the client library), ``modelreg.cli.*`` (``reg``).
"""

from __future__ import annotations

from modelreg.errors import (
    AliasNotFound,
    ArtifactDigestMismatch,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    NotReady,
    RegistryError,
    Timeout,
    Unavailable,
    VersionNotFound,
)
from modelreg.sidecar.client import AsyncClient, Client, Lineage, ResolvedModel

#: The release, in one place: the build reads it from here (``pyproject.toml``) and
#: ``reg --version`` prints it.
__version__ = "0.2.0.dev0"

__all__ = [
    "AliasNotFound",
    "ArtifactDigestMismatch",
    "AsyncClient",
    "Client",
    "InvalidRequest",
    "Lineage",
    "ModelNotFound",
    "NotFound",
    "NotReady",
    "RegistryError",
    "ResolvedModel",
    "Timeout",
    "Unavailable",
    "VersionNotFound",
    "__version__",
]
