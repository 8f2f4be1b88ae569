"""A synchronous client for central's REST API (docs/API.md), on the standard library alone.

One method per route, each returning the decoded JSON answer. Failures raise the classes of
:mod:`modelreg.errors`:

- an error answer from central raises the class central raised, rebuilt by
  :func:`modelreg.errors.from_body` (``ModelNotFound``, ``AliasConflict``, ``PermissionDenied``…,
  with its details as attributes);
- central unreachable (refused, reset, timed out, DNS) raises :class:`~modelreg.errors.Unavailable`
  whose one-line message names the URL;
- an answer that is not JSON raises :class:`~modelreg.errors.RegistryError`.

The constructor does no I/O; every call opens one HTTP request (``urllib``, no keep-alive), so
an instance may be shared between threads.

Example::

    client = CentralClient("http://127.0.0.1:8080", token=open(".reg/admin.token").read().strip())
    client.create_model("fraud", description="card fraud scorer")
    record, created = client.push("fraud", artifact_uri="s3://m/fraud/1", sha256="ab" * 32)
    client.approve("fraud", record["version"], comment="looks good")
    client.set_alias("fraud", "production", record["version"], expected=None)
    client.resolve("fraud", "production")["version"]["artifact"]["uri"]
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final

from modelreg.central.records import REGISTRATION_FIELDS, format_time
from modelreg.errors import InvalidName, InvalidRequest, RegistryError, Unavailable, from_body

__all__ = ["DEFAULT_TIMEOUT_S", "UNSET", "CentralClient"]

#: Seconds to wait for central to accept the connection and to answer.
DEFAULT_TIMEOUT_S = 10.0


class _Unset:
    """Type of :data:`UNSET`: "no compare-and-set" (``None`` means "I believe it is unset")."""

    def __repr__(self) -> str:
        return "UNSET"


#: Default of ``expected``: move the alias whatever it points at now.
UNSET: Final = _Unset()

#: Seconds to wait before reconnecting a broken event stream (unless central says otherwise).
_STREAM_RETRY_S = 2.0
#: Seconds of silence after which an event stream is taken for dead (central sends a
#: keep-alive every 15 s).
_STREAM_SILENCE_S = 60.0
#: What :meth:`CentralClient.update_webhook` may change.
WEBHOOK_CHANGES = ("url", "events", "models", "description", "enabled", "rotate_secret")

#: Optional fields of a version registration (``POST /v1/models/{model}/versions``).
VERSION_FIELDS = tuple(f for f in REGISTRATION_FIELDS if f not in ("artifact_uri", "sha256"))

Query = Mapping[str, Any]


def _segment(value: str | int) -> str:
    """One path segment, percent-encoded so that no value can reach another route.

    Raises :class:`~modelreg.errors.InvalidName` for an empty value (it would name another route).
    """
    text = str(value)
    if not text:
        raise InvalidName("a name must not be empty")
    return urllib.parse.quote(text, safe="")


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return format_time(value)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class CentralClient:
    """Calls central at ``url`` (``http://host:port``) with an optional bearer ``token``.

    ``wait`` (``"replicated"`` or ``"local"``) is sent as ``?wait=`` on every write: with
    ``"replicated"`` a write returns only once the replica holds it, and raises
    :class:`~modelreg.errors.NotReplicated` (the write stands) when the replica does not confirm
    within central's ``replicated_timeout_s`` — keep ``timeout`` above that. None: central's
    ``write_ack`` setting decides.

    Raises :class:`~modelreg.errors.InvalidRequest` at once if ``url`` is not an http(s) URL.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        wait: str | None = None,
    ):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidRequest(
                f"central URL must look like http://host:port, got {url!r}", field="central"
            )
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.wait = wait

    def __repr__(self) -> str:
        return f"CentralClient({self.url!r})"

    # -- transport ---------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """Send one request; return ``(HTTP status, decoded JSON)`` of a 2xx answer.

        ``query`` values that are ``None`` are left out, lists become repeated parameters.
        Raises the :mod:`modelreg.errors` class of an error answer, ``Unavailable`` when central
        cannot be reached, ``RegistryError`` when a 2xx answer is not JSON.
        """
        url = self.url + path
        if self.wait is not None and method != "GET":
            query = {**(query or {}), "wait": self.wait}
        if query:
            pairs = [
                (key, str(item))
                for key, value in query.items()
                if value is not None
                for item in (value if isinstance(value, list | tuple) else [value])
            ]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            raise from_body(_decode(raw), exc.code) from None
        except urllib.error.URLError as exc:
            raise self._unavailable(exc.reason) from None
        except (http.client.HTTPException, OSError) as exc:  # reset, timed out mid-answer
            raise self._unavailable(exc) from None
        if not raw:
            return status, None
        decoded = _decode(raw)
        if decoded is _NOT_JSON:
            raise RegistryError(f"central at {self.url} answered HTTP {status} without JSON")
        return status, decoded

    def call(self, method: str, path: str, query: Query | None = None, body: Any = None) -> Any:
        """:meth:`send`, returning only the decoded JSON."""
        return self.send(method, path, query, body)[1]

    def _unavailable(self, reason: object) -> Unavailable:
        if isinstance(reason, TimeoutError):
            text = f"no answer within {self.timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            text = reason.strerror
        else:
            text = str(reason) or type(reason).__name__
        return Unavailable(f"cannot reach central at {self.url}: {text}", url=self.url)

    # -- service -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status", "revision", "replication"}``."""
        result: dict[str, Any] = self.call("GET", "/healthz")
        return result

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the OpenAPI document of every route."""
        result: dict[str, Any] = self.call("GET", "/openapi.json")
        return result

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        request = urllib.request.Request(self.url + "/metrics", method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return bytes(answer.read()).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            raise from_body(_decode(raw), exc.code) from None
        except urllib.error.URLError as exc:
            raise self._unavailable(exc.reason) from None
        except (http.client.HTTPException, OSError) as exc:
            raise self._unavailable(exc) from None

    # -- models ------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        description: str = "",
        owner: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/models``: the new model with ``revision``. Raises ``AlreadyExists``."""
        body = {"name": name, "description": description, "owner": owner, "tags": dict(tags or {})}
        result: dict[str, Any] = self.call("POST", "/v1/models", body=body)
        return result

    def list_models(
        self, prefix: str | None = None, limit: int | None = None, page_token: str | None = None
    ) -> dict[str, Any]:
        """``GET /v1/models``: one page ``{"items", "next_page_token"}``."""
        query = {"prefix": prefix, "limit": limit, "page_token": page_token}
        result: dict[str, Any] = self.call("GET", "/v1/models", query)
        return result

    def iter_models(self, prefix: str | None = None) -> Iterator[dict[str, Any]]:
        """Every model (following ``next_page_token``)."""
        return self._pages(lambda token: self.list_models(prefix, 1000, token))

    def get_model(self, name: str) -> dict[str, Any]:
        """``GET /v1/models/{name}``: the model with its aliases and latest version.

        Raises ``ModelNotFound``.
        """
        result: dict[str, Any] = self.call("GET", f"/v1/models/{_segment(name)}")
        return result

    def update_model(
        self,
        name: str,
        description: str | None = None,
        owner: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``PATCH /v1/models/{name}``: change the given fields only. Raises ``ModelNotFound``."""
        body = _drop_none(
            {"description": description, "owner": owner, "tags": None if tags is None else tags}
        )
        result: dict[str, Any] = self.call("PATCH", f"/v1/models/{_segment(name)}", body=body)
        return result

    # -- versions ----------------------------------------------------------------------------

    def push(
        self, model: str, artifact_uri: str, sha256: str, **fields: Any
    ) -> tuple[dict[str, Any], bool]:
        """Register a version; return ``(version record with revision, created)``.

        ``created`` is False when central recognised a retry (same ``idempotency_key``, or same
        ``run_id`` and ``sha256``) and answered with the existing version. ``fields`` are those
        of :data:`VERSION_FIELDS`; ``None`` values are left out. Raises ``ModelNotFound``,
        ``AlreadyExists`` (same key, other content), ``InvalidRequest`` subclasses.
        """
        unknown = sorted(set(fields) - set(VERSION_FIELDS))
        if unknown:
            raise TypeError(f"push() got unknown fields: {', '.join(unknown)}")
        body = {"artifact_uri": artifact_uri, "sha256": sha256, **_drop_none(fields)}
        status, result = self.send("POST", f"/v1/models/{_segment(model)}/versions", body=body)
        return result, status == 201

    def register_version(
        self, model: str, artifact_uri: str, sha256: str, **fields: Any
    ) -> dict[str, Any]:
        """``POST /v1/models/{model}/versions``: :meth:`push` without the ``created`` flag."""
        return self.push(model, artifact_uri, sha256, **fields)[0]

    def list_versions(
        self,
        model: str,
        status: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/models/{model}/versions``: one page. Raises ``ModelNotFound``."""
        query = {"status": status, "limit": limit, "page_token": page_token}
        result: dict[str, Any] = self.call("GET", f"/v1/models/{_segment(model)}/versions", query)
        return result

    def get_version(self, model: str, version: int) -> dict[str, Any]:
        """``GET /v1/models/{model}/versions/{n}``.

        Raises ``ModelNotFound``, ``VersionNotFound``.
        """
        result: dict[str, Any] = self.call("GET", self._version_path(model, version))
        return result

    def update_version(
        self,
        model: str,
        version: int,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``PATCH /v1/models/{model}/versions/{n}``: description and/or tags."""
        body = _drop_none({"description": description, "tags": None if tags is None else tags})
        result: dict[str, Any] = self.call("PATCH", self._version_path(model, version), body=body)
        return result

    def approve(self, model: str, version: int, comment: str = "") -> dict[str, Any]:
        """``POST …/versions/{n}/approve``. Raises ``InvalidTransition``, ``FourEyesViolation``."""
        return self._version_action(model, version, "approve", {"comment": comment})

    def reject(self, model: str, version: int, comment: str = "") -> dict[str, Any]:
        """``POST …/versions/{n}/reject``. Raises ``InvalidTransition``, ``FourEyesViolation``."""
        return self._version_action(model, version, "reject", {"comment": comment})

    def archive(self, model: str, version: int, reason: str = "") -> dict[str, Any]:
        """``POST …/versions/{n}/archive``. Raises ``VersionInUse`` while an alias holds it."""
        return self._version_action(model, version, "archive", {"reason": reason})

    def _version_path(self, model: str, version: int) -> str:
        return f"/v1/models/{_segment(model)}/versions/{_segment(version)}"

    def _version_action(
        self, model: str, version: int, action: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        path = f"{self._version_path(model, version)}/{action}"
        result: dict[str, Any] = self.call("POST", path, body=body)
        return result

    # -- aliases -----------------------------------------------------------------------------

    def _alias_path(self, model: str, alias: str) -> str:
        return f"/v1/models/{_segment(model)}/aliases/{_segment(alias)}"

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        expected: int | _Unset | None = UNSET,
        reason: str = "",
    ) -> dict[str, Any]:
        """``PUT …/aliases/{alias}``: point ``alias`` at ``version``; return the alias move.

        ``expected`` is the version the caller believes the alias points at now (``None``: unset;
        :data:`UNSET`: don't check). Raises ``AliasConflict`` on a mismatch, ``NotApproved`` for
        a protected alias, ``PermissionDenied`` for a non-deployer on a protected alias.
        """
        body: dict[str, Any] = {"version": version, "reason": reason}
        if not isinstance(expected, _Unset):
            body["expected"] = expected
        result: dict[str, Any] = self.call("PUT", self._alias_path(model, alias), body=body)
        return result

    def delete_alias(
        self, model: str, alias: str, expected: int | _Unset | None = UNSET
    ) -> dict[str, Any]:
        """``DELETE …/aliases/{alias}``; return the alias move. Raises ``AliasNotFound``,
        ``AliasConflict`` when ``expected`` does not match (``None`` is sent as ``none``)."""
        query = None
        if not isinstance(expected, _Unset):
            query = {"expected": "none" if expected is None else expected}
        result: dict[str, Any] = self.call("DELETE", self._alias_path(model, alias), query)
        return result

    def rollback(self, model: str, alias: str, reason: str = "") -> dict[str, Any]:
        """``POST …/aliases/{alias}/rollback``: back to the previous approved target.

        Raises ``NothingToRollBack``, ``AliasNotFound``.
        """
        path = f"{self._alias_path(model, alias)}/rollback"
        result: dict[str, Any] = self.call("POST", path, body={"reason": reason})
        return result

    def get_alias(self, model: str, alias: str, at: datetime | str | None = None) -> dict[str, Any]:
        """``GET …/aliases/{alias}[?at=]``: the alias now or at time ``at``.

        Raises ``AliasNotFound`` (also when it was unset at ``at``).
        """
        query = {"at": _time(at)}
        result: dict[str, Any] = self.call("GET", self._alias_path(model, alias), query)
        return result

    def alias_history(
        self,
        model: str,
        alias: str,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET …/aliases/{alias}/history``: one page of alias moves."""
        path = f"{self._alias_path(model, alias)}/history"
        result: dict[str, Any] = self.call("GET", path, {"limit": limit, "page_token": page_token})
        return result

    def iter_alias_history(self, model: str, alias: str) -> Iterator[dict[str, Any]]:
        """Every move of ``alias`` (following ``next_page_token``)."""
        return self._pages(lambda token: self.alias_history(model, alias, 1000, token))

    def resolve(
        self, model: str, ref: str | int, at: datetime | str | None = None
    ) -> dict[str, Any]:
        """``GET /v1/resolve/{model}/{ref}[?at=]``: ``{"model", "ref", "version": record}``.

        ``ref`` is an alias, a version number or ``latest``. Raises ``ModelNotFound``,
        ``AliasNotFound``, ``VersionNotFound``.
        """
        path = f"/v1/resolve/{_segment(model)}/{_segment(ref)}"
        result: dict[str, Any] = self.call("GET", path, {"at": _time(at)})
        return result

    # -- search, events, audit ---------------------------------------------------------------

    def search_versions(
        self,
        model: str | None = None,
        status: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        alias: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/versions``: one page of versions matching every given filter."""
        query = {
            "model": model,
            "status": status,
            "tag": [f"{key}={value}" for key, value in (tags or {}).items()],
            "run_id": run_id,
            "alias": alias,
            "created_after": _time(created_after),
            "created_before": _time(created_before),
            "limit": limit,
            "page_token": page_token,
        }
        result: dict[str, Any] = self.call("GET", "/v1/versions", query)
        return result

    def events(
        self,
        after: int = 0,
        limit: int | None = None,
        wait: float | None = None,
        models: list[str] | None = None,
        actions: list[str] | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/events``: events with ``revision > after``, oldest first, one page
        (``{"items", "next_page_token", "last_revision"}``). ``wait`` (seconds, at most 60)
        makes it a long-poll: central answers once a matching event exists, or empty after
        ``wait``. ``models`` and ``actions`` are globs (any may match)."""
        query = {
            "after": after,
            "limit": limit,
            "wait": wait,
            "model": models or [],
            "action": actions or [],
            "page_token": page_token,
        }
        timeout = self.timeout + (wait or 0)
        result: dict[str, Any] = self._with_timeout(timeout).call("GET", "/v1/events", query)
        return result

    def follow_events(
        self,
        after: int | None = None,
        models: list[str] | None = None,
        actions: list[str] | None = None,
        reconnect: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Every event from ``GET /v1/events/stream`` as it is committed, forever: after
        ``after`` (None: from now on). When the stream breaks (central restarting, the network)
        it reconnects with ``Last-Event-ID``, so no event is missed or repeated; with
        ``reconnect=False`` it raises :class:`~modelreg.errors.Unavailable` instead. Error
        answers (a revoked token, a bad filter) raise their class.
        """
        last: int | None = after
        delay = _STREAM_RETRY_S
        while True:
            try:
                for event_id, data, retry in self._stream(last, models, actions):
                    if retry is not None:
                        delay = retry
                    if event_id is not None:
                        last = event_id
                    if data is not None:
                        yield data
                        delay = _STREAM_RETRY_S
            except Unavailable:
                if not reconnect:
                    raise
            else:  # central ended the stream (it is stopping): come back when it is up
                if not reconnect:
                    return
            time.sleep(delay)

    def _stream(
        self, last: int | None, models: list[str] | None, actions: list[str] | None
    ) -> Iterator[tuple[int | None, dict[str, Any] | None, float | None]]:
        """``(id, event, retry seconds)`` per server-sent block of one stream."""
        query = {"model": models or [], "action": actions or []}
        if last is not None:
            query["after"] = [str(last)]
        url = (
            self.url
            + "/v1/events/stream?"
            + urllib.parse.urlencode(
                [(key, value) for key, values in query.items() for value in values]
            )
        )
        headers = {"Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        request = urllib.request.Request(url, headers=headers)
        try:
            answer = urllib.request.urlopen(request, timeout=_STREAM_SILENCE_S)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            raise from_body(_decode(raw), exc.code) from None
        except urllib.error.URLError as exc:
            raise self._unavailable(exc.reason) from None
        except (http.client.HTTPException, OSError) as exc:
            raise self._unavailable(exc) from None
        with answer:
            event_id: int | None = None
            data: list[str] = []
            retry: float | None = None
            while True:
                try:
                    raw_line = answer.readline()
                except (http.client.HTTPException, OSError) as exc:  # silent too long, reset
                    raise self._unavailable(exc) from None
                if not raw_line:
                    return
                line = raw_line.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "id" and value.isdigit():
                        event_id = int(value)
                    elif name == "data":
                        data.append(value)
                    elif name == "retry" and value.isdigit():
                        retry = int(value) / 1000
                    continue
                if event_id is not None or data or retry is not None:
                    decoded = json.loads("\n".join(data)) if data else None
                    yield event_id, decoded, retry
                event_id, data, retry = None, [], None

    def _with_timeout(self, timeout: float) -> CentralClient:
        if timeout <= self.timeout:
            return self
        return CentralClient(self.url, self.token, timeout)

    def verify_audit(self) -> dict[str, Any]:
        """``GET /v1/audit/verify``: ``{"ok", "checked", "revision", "first_bad_revision",
        "message"}`` (admin)."""
        result: dict[str, Any] = self.call("GET", "/v1/audit/verify")
        return result

    # -- tokens ------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, models: list[str] | None = None) -> dict[str, Any]:
        """``POST /v1/tokens``: the new token, with its ``secret`` (shown only this once)."""
        body: dict[str, Any] = {"name": name, "role": role}
        if models:
            body["models"] = list(models)
        result: dict[str, Any] = self.call("POST", "/v1/tokens", body=body)
        return result

    def list_tokens(self) -> dict[str, Any]:
        """``GET /v1/tokens``: ``{"items": [...]}`` without secrets."""
        result: dict[str, Any] = self.call("GET", "/v1/tokens")
        return result

    def revoke_token(self, name: str) -> dict[str, Any]:
        """``DELETE /v1/tokens/{name}``. Raises ``TokenNotFound``."""
        result: dict[str, Any] = self.call("DELETE", f"/v1/tokens/{_segment(name)}") or {}
        return result

    # -- webhooks ----------------------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: list[str] | None = None,
        models: list[str] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """``POST /v1/webhooks``: the new subscription with its ``secret`` (shown only this
        once). Raises ``TargetRefused`` for a URL central may not reach."""
        body: dict[str, Any] = {"url": url, "description": description}
        if events:
            body["events"] = list(events)
        if models:
            body["models"] = list(models)
        result: dict[str, Any] = self.call("POST", "/v1/webhooks", body=body)
        return result

    def list_webhooks(self) -> dict[str, Any]:
        """``GET /v1/webhooks``: ``{"items": [...]}``, never secrets."""
        result: dict[str, Any] = self.call("GET", "/v1/webhooks")
        return result

    def get_webhook(self, webhook: str) -> dict[str, Any]:
        """``GET /v1/webhooks/{id}``. Raises ``WebhookNotFound``."""
        result: dict[str, Any] = self.call("GET", f"/v1/webhooks/{_segment(webhook)}")
        return result

    def update_webhook(self, webhook: str, **changes: Any) -> dict[str, Any]:
        """``PATCH /v1/webhooks/{id}`` with ``url``, ``events``, ``models``, ``description``,
        ``enabled`` or ``rotate_secret`` (then the answer holds the new ``secret``)."""
        unknown = sorted(set(changes) - set(WEBHOOK_CHANGES))
        if unknown:
            raise TypeError(f"update_webhook() got unknown fields: {', '.join(unknown)}")
        path = f"/v1/webhooks/{_segment(webhook)}"
        result: dict[str, Any] = self.call("PATCH", path, body=_drop_none(changes))
        return result

    def delete_webhook(self, webhook: str) -> dict[str, Any]:
        """``DELETE /v1/webhooks/{id}``. Raises ``WebhookNotFound``."""
        result: dict[str, Any] = self.call("DELETE", f"/v1/webhooks/{_segment(webhook)}")
        return result

    def test_webhook(self, webhook: str) -> dict[str, Any]:
        """``POST /v1/webhooks/{id}/test``: one signed ``webhook.test`` ping; the delivery."""
        path = f"/v1/webhooks/{_segment(webhook)}/test"
        result: dict[str, Any] = self._delivery_client().call("POST", path, body={})
        return result

    def deliveries(
        self,
        webhook: str,
        state: str | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/webhooks/{id}/deliveries``: one page, newest first."""
        query = {"state": state, "limit": limit, "page_token": page_token}
        path = f"/v1/webhooks/{_segment(webhook)}/deliveries"
        result: dict[str, Any] = self.call("GET", path, query)
        return result

    def get_delivery(self, webhook: str, delivery: int) -> dict[str, Any]:
        """``GET /v1/webhooks/{id}/deliveries/{n}``: with every attempt (``attempt_log``)."""
        path = f"/v1/webhooks/{_segment(webhook)}/deliveries/{_segment(delivery)}"
        result: dict[str, Any] = self.call("GET", path)
        return result

    def redeliver(self, webhook: str, delivery: int) -> dict[str, Any]:
        """``POST …/deliveries/{n}/redeliver``: the message again, now; the new delivery."""
        path = f"/v1/webhooks/{_segment(webhook)}/deliveries/{_segment(delivery)}/redeliver"
        result: dict[str, Any] = self._delivery_client().call("POST", path, body={})
        return result

    def _delivery_client(self) -> CentralClient:
        # central waits for the receiver (up to its webhook_timeout_s, 10 s by default)
        return self._with_timeout(self.timeout + 30.0)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _pages(fetch: Callable[[str | None], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = fetch(token)
            yield from page.get("items", [])
            token = page.get("next_page_token")
            if not token:
                return


class _NotJSON:
    pass


_NOT_JSON: Final = _NotJSON()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON
