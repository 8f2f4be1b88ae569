"""The registry facade the HTTP layer calls: validate, then read or write through the store.

Every method validates its arguments (:mod:`modelreg.central.validate`) before touching the
database, so bad input raises an :class:`~modelreg.errors.InvalidRequest` and changes nothing.
Mutations run the rule functions of :mod:`modelreg.central.policy` through the store's one write
path and return the written record with the new registry ``"revision"``; reads run
:mod:`modelreg.central.queries` on a read-only connection.

Errors (all from :mod:`modelreg.errors`): ``InvalidName``, ``InvalidDigest``, ``InvalidURI``,
``InvalidField`` for bad arguments; ``ModelNotFound``, ``VersionNotFound``, ``AliasNotFound``;
``AlreadyExists``, ``AliasConflict``, ``InvalidTransition``, ``NotApproved``, ``VersionInUse``,
``NothingToRollBack``, ``FourEyesViolation`` for rules; ``Unavailable`` when the registry is
closed or its database fails. Each carries its details (``model``, ``version``, ``alias``,
``field``, ``expected``, ``actual``) as attributes.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import partial
from typing import Any

from modelreg.central import policy, queries
from modelreg.central import validate as v
from modelreg.central.audit import Verifier
from modelreg.central.config import CentralConfig
from modelreg.central.pagetoken import PageTokens
from modelreg.central.policy import UNSET, Unset
from modelreg.central.records import REGISTRATION_FIELDS
from modelreg.central.store import Store
from modelreg.errors import InvalidField

__all__ = ["STATUSES", "TOKEN_ACTIONS", "UNSET", "WEBHOOK_ACTIONS", "Registry", "Unset"]

#: Every version status.
STATUSES = ("registered", "approved", "rejected", "archived")
#: The event actions of token changes (:meth:`Registry.record_token`).
TOKEN_ACTIONS = ("token.create", "token.revoke")
#: The event actions of webhook subscription changes (:meth:`Registry.record_webhook`).
WEBHOOK_ACTIONS = ("webhook.create", "webhook.update", "webhook.delete", "webhook.disable")
#: Every token role (``central/auth.py`` owns their meaning).
TOKEN_ROLES = ("reader", "publisher", "approver", "deployer", "admin")
#: Most model-name globs a token's scope lists, and the longest glob.
MAX_TOKEN_GLOBS = 100
MAX_GLOB_LEN = 128
#: Longest idempotency key, run id, commit, digest text.
MAX_KEY_LEN = 256
MAX_FORMAT_LEN = 64

_VERSION_FIELDS = frozenset(REGISTRATION_FIELDS)
_WEBHOOK_ID = re.compile(r"wh_[0-9a-f]{16}")

Page = dict[str, Any]
Time = datetime | str | None


class Registry:
    """Models, versions, aliases and the event log of one ``registry.db``.

    ``await open()`` before use and ``await close()`` after; the constructor does no I/O.
    """

    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.store = Store(config.registry_db, replicated=config.replica_url is not None)
        #: Issues and checks page tokens; central gives it the key kept in secrets.db
        #: (``central/app.py``), a registry used on its own makes up a key.
        self.page_tokens = PageTokens()
        self._protected = frozenset(config.protected_aliases)

    async def open(self) -> None:
        """Create the data directory, migrate ``registry.db`` and write the heartbeat row.

        Raises :class:`modelreg.central.schema.SchemaTooNew` for a database of a newer release.
        """
        await self.store.open()
        try:
            await self.heartbeat()
        except BaseException:
            await self.store.close()
            raise

    async def close(self) -> None:
        """Finish queued writes and close the database (never checkpoints)."""
        await self.store.close()

    async def __aenter__(self) -> Registry:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- models --------------------------------------------------------------------------

    async def create_model(
        self,
        actor: str,
        name: str,
        description: str = "",
        owner: str = "",
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a model; the model record with ``revision``. Raises ``AlreadyExists``."""
        fn = partial(
            policy.create_model,
            actor=v.actor(actor),
            name=v.model_name(name),
            description=v.text(description, "description", v.MAX_DESCRIPTION_LEN),
            owner=v.text(owner, "owner"),
            tags=v.tags({} if tags is None else tags),
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def get_model(self, name: str) -> dict[str, Any]:
        """The model record with its aliases and latest version; raises ``ModelNotFound``."""
        return await self.store.read(partial(queries.get_model, name=v.model_name(name)))

    async def list_models(
        self,
        prefix: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
        scope: tuple[str, ...] = (),
    ) -> Page:
        """Models in name order, optionally those whose name starts with ``prefix``; only
        those inside ``scope`` (a token's model-name globs; empty: every model)."""
        fn = partial(
            queries.list_models,
            prefix=v.optional_text(prefix, "prefix", 128),
            limit=v.limit(limit),
            page_token=page_token,
            tokens=self.page_tokens,
            scope=_scope(scope),
        )
        return await self.store.read(fn)

    async def update_model(
        self,
        actor: str,
        name: str,
        description: str | None = None,
        owner: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change the given fields of a model; the model record with ``revision``."""
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = v.text(description, "description", v.MAX_DESCRIPTION_LEN)
        if owner is not None:
            changes["owner"] = v.text(owner, "owner")
        if tags is not None:
            changes["tags"] = v.tags(tags)
        fn = partial(
            policy.update_model, actor=v.actor(actor), name=v.model_name(name), changes=changes
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    # -- versions ------------------------------------------------------------------------

    async def register_version(
        self, actor: str, model: str, **fields: Any
    ) -> tuple[dict[str, Any], bool]:
        """Register the next version; ``(record with revision, created)``.

        ``created`` is False for an idempotent retry (same ``idempotency_key``, or same
        ``run_id`` + ``sha256``): the existing version, nothing written. Raises
        ``AlreadyExists`` when a retry carries different immutable fields.
        """
        fn = partial(
            policy.register_version,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            fields=_version_fields(
                fields, self.config.artifact_uri_schemes, self.config.artifact_uri_roots
            ),
        )
        result: tuple[dict[str, Any], bool] = await self.store.write(fn)
        return result

    async def get_version(self, model: str, version: int | str) -> dict[str, Any]:
        """One version record; raises ``ModelNotFound`` / ``VersionNotFound``."""
        fn = partial(
            queries.get_version,
            model=v.model_name(model, "model"),
            version=v.version_number(version),
        )
        return await self.store.read(fn)

    async def list_versions(
        self,
        model: str,
        status: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page:
        """A model's versions in version order, optionally of one ``status``."""
        fn = partial(
            queries.list_versions,
            model=v.model_name(model, "model"),
            status=_status(status),
            limit=v.limit(limit),
            page_token=page_token,
            tokens=self.page_tokens,
        )
        return await self.store.read(fn)

    async def update_version(
        self,
        actor: str,
        model: str,
        version: int | str,
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change a version's description and/or tags; the record with ``revision``."""
        changes: dict[str, Any] = {}
        if description is not None:
            changes["description"] = v.text(description, "description", v.MAX_DESCRIPTION_LEN)
        if tags is not None:
            changes["tags"] = v.tags(tags)
        fn = partial(
            policy.update_version,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            version=v.version_number(version),
            changes=changes,
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def decide(
        self, actor: str, model: str, version: int | str, approve: bool, comment: str = ""
    ) -> dict[str, Any]:
        """Approve (``approve=True``) or reject a registered version.

        Raises ``InvalidTransition`` unless it is registered, ``FourEyesViolation`` when
        ``config.four_eyes`` and ``actor`` registered it.
        """
        if not isinstance(approve, bool):
            raise InvalidField("approve must be true or false", field="approve")
        fn = partial(
            policy.decide,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            version=v.version_number(version),
            approve=approve,
            comment=v.text(comment, "comment"),
            four_eyes=self.config.four_eyes,
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def archive(
        self, actor: str, model: str, version: int | str, reason: str = ""
    ) -> dict[str, Any]:
        """Archive a version; raises ``VersionInUse`` while an alias points at it."""
        fn = partial(
            policy.archive,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            version=v.version_number(version),
            reason=v.text(reason, "reason"),
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    # -- aliases -------------------------------------------------------------------------

    def is_protected(self, alias: str) -> bool:
        """Whether ``alias`` is protected (only approved versions; only deployers move it)."""
        return alias in self._protected

    async def set_alias(
        self,
        actor: str,
        model: str,
        alias: str,
        version: int | str,
        expected: int | str | Unset | None = UNSET,
        reason: str = "",
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version``; the alias move record (with ``revision``).

        ``expected``: UNSET (no check), None (the caller believes the alias is unset) or a
        version number; a mismatch raises ``AliasConflict`` and changes nothing. Raises
        ``NotApproved`` for a protected alias and an unapproved version, ``InvalidTransition``
        for an archived version.
        """
        name = v.alias_name(alias)
        fn = partial(
            policy.set_alias,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            alias=name,
            version=v.version_number(version),
            expected=_expected(expected),
            reason=v.text(reason, "reason"),
            protected=self.is_protected(name),
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def delete_alias(
        self,
        actor: str,
        model: str,
        alias: str,
        expected: int | str | Unset | None = UNSET,
        reason: str = "",
    ) -> dict[str, Any]:
        """Unset ``alias``; the move record. Raises ``AliasNotFound``, ``AliasConflict``."""
        fn = partial(
            policy.delete_alias,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            alias=v.alias_name(alias),
            expected=_expected(expected),
            reason=v.text(reason, "reason"),
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def rollback_alias(
        self, actor: str, model: str, alias: str, reason: str = ""
    ) -> dict[str, Any]:
        """Re-point ``alias`` to its previous target that is still approved; the move record.

        Raises ``AliasNotFound`` (never set) or ``NothingToRollBack``.
        """
        fn = partial(
            policy.rollback_alias,
            actor=v.actor(actor),
            model=v.model_name(model, "model"),
            alias=v.alias_name(alias),
            reason=v.text(reason, "reason"),
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def get_alias(self, model: str, alias: str, at: Time = None) -> dict[str, Any]:
        """The alias now, or as it was at ``at``; raises ``AliasNotFound`` when unset then."""
        fn = partial(
            queries.get_alias,
            model=v.model_name(model, "model"),
            alias=v.alias_name(alias),
            at=v.time_bound(at, "at"),
        )
        return await self.store.read(fn)

    async def alias_history(
        self, model: str, alias: str, limit: int = 100, page_token: str | None = None
    ) -> Page:
        """Every move of ``alias``, newest first."""
        fn = partial(
            queries.alias_history,
            model=v.model_name(model, "model"),
            alias=v.alias_name(alias),
            limit=v.limit(limit),
            page_token=page_token,
            tokens=self.page_tokens,
        )
        return await self.store.read(fn)

    async def resolve(self, model: str, ref: str, at: Time = None) -> dict[str, Any]:
        """``{"model", "ref", "version": record}`` for an alias, a number or ``latest``."""
        fn = partial(
            queries.resolve,
            model=v.model_name(model, "model"),
            ref=_ref(ref),
            at=v.time_bound(at, "at"),
        )
        return await self.store.read(fn)

    # -- search, events, audit -----------------------------------------------------------

    async def search_versions(
        self,
        model: str | None = None,
        status: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        alias: str | None = None,
        created_after: Time = None,
        created_before: Time = None,
        limit: int = 100,
        page_token: str | None = None,
        scope: tuple[str, ...] = (),
    ) -> Page:
        """Versions of every model matching all given filters, by (model, version).

        ``tags`` matches versions carrying every given key with that value;
        ``created_after`` is inclusive, ``created_before`` exclusive. Only models inside
        ``scope`` (a token's model-name globs; empty: every model) are searched.
        """
        fn = partial(
            queries.search_versions,
            model=None if model is None else v.model_name(model, "model"),
            status=_status(status),
            tags=None if tags is None else v.tags(tags, "tag"),
            run_id=v.optional_text(run_id, "run_id", MAX_KEY_LEN),
            alias=None if alias is None else v.alias_name(alias),
            created_after=v.time_bound(created_after, "created_after"),
            created_before=v.time_bound(created_before, "created_before"),
            limit=v.limit(limit),
            page_token=page_token,
            tokens=self.page_tokens,
            scope=_scope(scope),
        )
        return await self.store.read(fn)

    async def events(self, after: int = 0, limit: int = 100, page_token: str | None = None) -> Page:
        """Events after revision ``after`` (or after ``page_token``), in revision order."""
        if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**63:
            raise InvalidField("after must be a revision number (an integer ≥ 0)", field="after")
        if page_token is not None:
            position = self.page_tokens.decode("events", page_token)
            if isinstance(position, bool) or not isinstance(position, int) or position < 0:
                raise InvalidField("invalid page_token", field="page_token")
            after = min(max(after, position), 2**63 - 1)
        fn = partial(queries.events, after=after, limit=v.limit(limit), tokens=self.page_tokens)
        return await self.store.read(fn)

    async def record_token(
        self, actor: str, action: str, name: str, role: str, models: list[str]
    ) -> dict[str, Any]:
        """Append the event of a token change (``token.create`` or ``token.revoke``, subject
        the token's name, details ``{role, models}``); the event with its ``revision``.

        The token itself lives in ``secrets.db`` (``central/auth.py`` calls this inside its own
        transaction); its secret and hash never reach this database. Raises ``InvalidField``
        and ``InvalidName``.
        """
        if action not in TOKEN_ACTIONS:
            raise InvalidField(f"invalid token action {action!r}", field="action")
        if role not in TOKEN_ROLES:
            raise InvalidField(f"invalid role {role!r}", field="role")
        if (
            not isinstance(models, list)
            or len(models) > MAX_TOKEN_GLOBS
            or not all(isinstance(g, str) and 0 < len(g) <= MAX_GLOB_LEN for g in models)
        ):
            raise InvalidField("models must be a list of model-name globs", field="models")
        fn = partial(
            policy.record_token,
            actor=v.actor(actor),
            action=action,
            name=v.model_name(name, "name"),
            role=role,
            models=list(models),
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def record_webhook(
        self, actor: str, action: str, webhook: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        """Append the event of a webhook subscription change (one of :data:`WEBHOOK_ACTIONS`,
        subject the subscription's id); the event with its ``revision``.

        ``central/webhooks.py`` calls this inside its ``secrets.db`` transaction and never puts
        a secret or a URL's path in ``details``. Raises ``InvalidField``.
        """
        if action not in WEBHOOK_ACTIONS:
            raise InvalidField(f"invalid webhook action {action!r}", field="action")
        if not isinstance(webhook, str) or not _WEBHOOK_ID.fullmatch(webhook):
            raise InvalidField(f"invalid webhook id {webhook!r}", field="webhook")
        if not isinstance(details, dict):
            raise InvalidField("details must be an object", field="details")
        fn = partial(
            policy.record_webhook,
            actor=v.actor(actor),
            action=action,
            webhook=webhook,
            details=details,
        )
        result: dict[str, Any] = await self.store.write(fn)
        return result

    async def verify_audit(self) -> dict[str, Any]:
        """Recompute the event hash chain, in chunks of short reads: ``{"ok", "checked",
        "revision", "first_bad_revision", "message"}`` (see
        :func:`modelreg.central.audit.verify`)."""
        verifier = Verifier()
        while True:
            result = await self.store.read(verifier.step)
            if result is not None:
                return result

    async def revision(self) -> int:
        """The registry revision: the number of the last committed event."""
        return self.store.revision

    def revision_hash(self) -> str:
        """The chain hash of :meth:`revision`'s event: with the number, it names the history (a
        revision number reissued after a loss has another hash)."""
        return self.store.revision_hash

    async def heartbeat(self) -> None:
        """Rewrite the heartbeat row (time + revision) so followers can see central is alive."""
        await self.store.write(policy.heartbeat)

    async def counts(self) -> dict[str, int]:
        """Row counts of models, versions, aliases and events."""
        return await self.store.read(queries.counts)


def _version_fields(
    fields: dict[str, Any], schemes: tuple[str, ...], roots: tuple[str, ...]
) -> dict[str, Any]:
    unknown = sorted(set(fields) - _VERSION_FIELDS)
    if unknown:
        raise InvalidField(f"unknown field {unknown[0]!r}", field=unknown[0])
    if "artifact_uri" not in fields:
        raise InvalidField("artifact_uri is required", field="artifact_uri")
    if "sha256" not in fields:
        raise InvalidField("sha256 is required", field="sha256")
    get = fields.get
    parent = get("parent_version")
    key = v.optional_text(get("idempotency_key"), "idempotency_key", MAX_KEY_LEN)
    if key == "":
        raise InvalidField("idempotency_key must not be empty", field="idempotency_key")
    return {
        "artifact_uri": v.uri(fields["artifact_uri"], "artifact_uri", schemes, roots),
        "sha256": v.sha256(fields["sha256"]),
        "size": v.size(get("size")),
        "format": v.text(_or(get("format"), ""), "format", MAX_FORMAT_LEN),
        "run_id": v.optional_text(get("run_id"), "run_id", MAX_KEY_LEN),
        "commit": v.optional_text(get("commit"), "commit", MAX_KEY_LEN),
        "dataset_uri": v.dataset_uri(get("dataset_uri")),
        "dataset_digest": v.optional_text(get("dataset_digest"), "dataset_digest", MAX_KEY_LEN),
        "parent_version": None if parent is None else v.positive_int(parent, "parent_version"),
        "params": v.params({} if get("params") is None else get("params")),
        "metrics": v.metrics({} if get("metrics") is None else get("metrics")),
        "tags": v.tags({} if get("tags") is None else get("tags")),
        "description": v.text(_or(get("description"), ""), "description", v.MAX_DESCRIPTION_LEN),
        "idempotency_key": key,
    }


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _status(status: Any) -> str | None:
    if status is None:
        return None
    if status not in STATUSES:
        raise InvalidField(f"status must be one of {', '.join(STATUSES)}", field="status")
    return str(status)


def _scope(scope: Any) -> tuple[str, ...]:
    if not isinstance(scope, tuple | list) or not all(isinstance(g, str) for g in scope):
        raise InvalidField("scope must be a list of model-name globs", field="scope")
    return tuple(scope)


def _expected(expected: Any) -> int | Unset | None:
    if expected is None or isinstance(expected, Unset):
        return expected
    return v.version_number(expected, "expected")


def _ref(ref: Any) -> str:
    if isinstance(ref, int) and not isinstance(ref, bool):
        return str(v.positive_int(ref, "ref"))
    if isinstance(ref, str) and (ref == "latest" or (ref.isascii() and ref.isdigit())):
        if ref != "latest":
            v.version_number(ref, "ref")
        return ref
    return v.alias_name(ref, "ref")
