"""The one exception tree of modelreg, its wire codes and HTTP statuses.

Every process (central, sidecar, the clients and the CLI) raises and catches these classes. The
server turns an exception into one JSON (or msgpack) body with :func:`error_body`; a client turns
that body back into the same class with :func:`from_body`. Codes are stable strings: they are the
API. Never put a traceback or a driver message in ``message``.

::

    RegistryError                      internal            500
    ├── InvalidRequest                 bad_request         400
    │   ├── InvalidJSON                invalid_json        400
    │   ├── InvalidField               invalid_field       400
    │   ├── InvalidName                invalid_name        400
    │   ├── InvalidDigest              invalid_sha256      400
    │   ├── InvalidURI                 invalid_uri         400
    │   ├── TargetRefused              target_refused      400   (webhook URL not allowed)
    │   └── PayloadTooLarge            payload_too_large   413
    ├── Unauthenticated                unauthenticated     401
    ├── PermissionDenied               permission_denied   403
    │   └── FourEyesViolation          four_eyes           403
    ├── NotFound                       not_found           404
    │   ├── ModelNotFound              model_not_found     404
    │   ├── VersionNotFound            version_not_found   404
    │   ├── AliasNotFound              alias_not_found     404
    │   ├── TokenNotFound              token_not_found     404
    │   ├── WebhookNotFound            webhook_not_found   404
    │   └── DeliveryNotFound           delivery_not_found  404
    ├── MethodNotAllowed               method_not_allowed  405
    ├── Conflict                       conflict            409
    │   ├── AlreadyExists              already_exists      409
    │   ├── AliasConflict              alias_conflict      409   (compare-and-set mismatch)
    │   ├── InvalidTransition          invalid_transition  409   (e.g. approve a rejected version)
    │   ├── NotApproved                not_approved        409   (protected alias, not approved)
    │   ├── VersionInUse               version_in_use      409   (archive a version an alias holds)
    │   ├── NothingToRollBack          nothing_to_roll_back 409
    │   ├── ArtifactDigestMismatch     digest_mismatch     409   (fetched bytes differ from sha256)
    │   └── HistoryMismatch            history_mismatch    409   (min_revision is another event)
    └── Unavailable                    unavailable         503
        ├── NotReady                   not_ready           503   (sidecar has no copy yet)
        ├── NotReplicated              not_replicated      503   (committed, replica unconfirmed)
        └── Timeout                    timeout             504   (min_revision not reached)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AliasConflict",
    "AliasNotFound",
    "AlreadyExists",
    "ArtifactDigestMismatch",
    "Conflict",
    "DeliveryNotFound",
    "FourEyesViolation",
    "HistoryMismatch",
    "InvalidDigest",
    "InvalidField",
    "InvalidJSON",
    "InvalidName",
    "InvalidRequest",
    "InvalidTransition",
    "InvalidURI",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotApproved",
    "NotFound",
    "NotReady",
    "NotReplicated",
    "NothingToRollBack",
    "PayloadTooLarge",
    "PermissionDenied",
    "RegistryError",
    "TargetRefused",
    "Timeout",
    "TokenNotFound",
    "Unauthenticated",
    "Unavailable",
    "VersionInUse",
    "VersionNotFound",
    "WebhookNotFound",
    "error_body",
    "from_body",
]


class RegistryError(Exception):
    """Base class. ``code`` is the stable wire code, ``status`` the HTTP status.

    ``details`` holds the identifying fields (model, version, alias, expected, actual…); they are
    sent on the wire beside ``code`` and ``message`` and set as attributes for callers.
    """

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, **{self.details!r})"


class InvalidRequest(RegistryError):
    code = "bad_request"
    status = 400


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class InvalidField(InvalidRequest):
    code = "invalid_field"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class InvalidDigest(InvalidRequest):
    code = "invalid_sha256"


class InvalidURI(InvalidRequest):
    code = "invalid_uri"


class TargetRefused(InvalidRequest):
    """A webhook URL points where central may not send requests (link-local always; loopback
    and private addresses unless central allows them)."""

    code = "target_refused"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"
    status = 413


class Unauthenticated(RegistryError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(RegistryError):
    code = "permission_denied"
    status = 403


class FourEyesViolation(PermissionDenied):
    code = "four_eyes"


class NotFound(RegistryError):
    code = "not_found"
    status = 404


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class TokenNotFound(NotFound):
    code = "token_not_found"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"


class MethodNotAllowed(RegistryError):
    code = "method_not_allowed"
    status = 405


class Conflict(RegistryError):
    code = "conflict"
    status = 409


class AlreadyExists(Conflict):
    code = "already_exists"


class AliasConflict(Conflict):
    code = "alias_conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class NotApproved(Conflict):
    code = "not_approved"


class VersionInUse(Conflict):
    code = "version_in_use"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"


class ArtifactDigestMismatch(Conflict):
    """The artifact's bytes do not hash to the sha256 its version record carries."""

    code = "digest_mismatch"


class HistoryMismatch(Conflict):
    """(sidecar) The event at ``min_revision`` is not the one whose ``revision_hash`` the caller
    gave: that revision number was issued again after a loss (docs/OPERATIONS.md,
    "Durability"). Details: ``min_revision``, ``revision_hash`` (asked), ``actual`` (served),
    ``revision``."""

    code = "history_mismatch"


class Unavailable(RegistryError):
    code = "unavailable"
    status = 503


class NotReady(Unavailable):
    code = "not_ready"


class NotReplicated(Unavailable):
    """A ``wait=replicated`` write is committed but the replica did not confirm it in time.

    The write stands (``revision``, ``revision_hash``); it ships when the store answers again.
    """

    code = "not_replicated"


class Timeout(Unavailable):
    code = "timeout"
    status = 504


def _all_classes() -> list[type[RegistryError]]:
    seen: list[type[RegistryError]] = [RegistryError]
    stack: list[type[RegistryError]] = [RegistryError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


#: code -> class; the one table both directions use.
CODES: dict[str, type[RegistryError]] = {cls.code: cls for cls in _all_classes()}
#: code -> HTTP status.
HTTP_STATUS: dict[str, int] = {code: cls.status for code, cls in CODES.items()}
_BY_STATUS: dict[int, type[RegistryError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    503: Unavailable,
    504: Timeout,
}


def error_body(exc: RegistryError) -> dict[str, Any]:
    """The body every error answer carries: ``{"error": {"code", "message", **details}}``.

    ``details`` values must be JSON- and msgpack-serialisable (str, int, None, lists of them).
    """
    return {"error": {**exc.details, "code": exc.code, "message": exc.message}}


def from_body(body: Any, status: int = 500) -> RegistryError:
    """Rebuild the exception a server raised from its error body (and HTTP status).

    An unknown code falls back to the class of the HTTP status, so an older client still raises
    the right family for a newer server's code.
    """
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return _BY_STATUS.get(status, RegistryError)(f"unexpected error answer (HTTP {status})")
    code = str(err.get("code", ""))
    message = str(err.get("message", code or "error"))
    details = {k: v for k, v in err.items() if k not in ("code", "message") and k.isidentifier()}
    cls = CODES.get(code) or _BY_STATUS.get(status, RegistryError)
    exc = cls(message, **details)
    return exc
