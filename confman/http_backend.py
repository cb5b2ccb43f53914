"""`HttpBackend`: the `DocumentBackend` of a remote hub, a ``confman serve`` server's API.

The managers above it are the ones of direct mode: they build stored documents and hand
them here, so this module only carries them (``/api/v1/layers``) and turns the server's
answers back into confman's exceptions, the same ones as in direct mode:

- 412 → `ConcurrencyConflict` (with the server's current version),
- 422 → `ValidationFailed` (with each field's path),
- 404 → `NotFound`, 401 and 403 → `PermissionDenied`,
- no answer, a timeout or a 5xx → `StoreUnavailable` (the source of truth is away).

Secrets arrive as ``{"$secret": ...}`` (in clear for a service token, else masked) and
are kept encrypted with the remote hub's own keys (`confman.secrets.from_wire`), so the
managers, the snapshot file and everything else see the stored form they always see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import httpx

from .change import BASE, Action, ChangeRecord
from .exceptions import (
    ConcurrencyConflict,
    ConfmanError,
    FieldError,
    NotFound,
    PermissionDenied,
    StoreUnavailable,
    ValidationFailed,
)
from .secrets import KeyRing, decrypt_document, from_wire
from .store import LoggedChange, StoredDocument, Write

__all__ = ["HttpBackend", "raise_for_problem"]

log = logging.getLogger("confman.remote")

_BASE_NAME = "base"  # how the API spells the base environment
_MAX_DETAIL = 500  # characters of a server's message kept in an exception


def _env_param(environment: str) -> str:
    return _BASE_NAME if environment == BASE else environment


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def raise_for_problem(
    response: httpx.Response, *, namespace: str = "", key: str = "", expected: int = 0
) -> None:
    """Raise what a direct hub would have raised for the server's error answer."""
    status = response.status_code
    if status < 400:
        return
    body = _problem(response)
    detail = str(body.get("detail") or response.reason_phrase)[:_MAX_DETAIL]
    if status in (401, 403):
        raise PermissionDenied(f"the server refused the token: {detail}", status=status)
    if status == 412:
        current = body.get("current_version")
        raise ConcurrencyConflict(
            namespace, key, expected=expected, current=current if isinstance(current, int) else -1
        )
    if status == 422:
        errors = [
            FieldError(str(e.get("path", "")), str(e.get("message", "invalid")))
            for e in body.get("errors") or ()
            if isinstance(e, dict)
        ] or [FieldError("", detail)]
        raise ValidationFailed(
            namespace,
            key,
            errors,
            source=str(body.get("source") or "server"),
            environment=body.get("environment")
            if isinstance(body.get("environment"), str)
            else None,
        )
    if status == 404:
        raise NotFound(detail)
    if status >= 500:
        raise StoreUnavailable(f"the server answered {status}: {detail}")
    raise ConfmanError(f"the server answered {status}: {detail}")


def _when(raw: Any) -> datetime:
    return datetime.fromisoformat(str(raw))


class HttpBackend:
    """Documents over ``confman serve``'s HTTP API (see the module docstring)."""

    def __init__(
        self, client: httpx.AsyncClient, keyring: KeyRing, environment: str | None
    ) -> None:
        self.client = client
        self.keyring = keyring
        self.environment = environment  # the remote hub's; None: the base
        # The start-up read (`read_layers`), handed to each manager as it loads.
        self._prefetched: dict[str, list[StoredDocument]] | None = None

    # ----------------------------------------------------------------- transport

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as e:
            raise StoreUnavailable(f"the server did not answer in time ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise StoreUnavailable(f"cannot reach the server: {type(e).__name__}: {e}") from e

    # ----------------------------------------------------------------- wire form

    def document(self, raw: dict[str, Any]) -> StoredDocument:
        data = raw.get("data")
        return StoredDocument(
            namespace=str(raw["namespace"]),
            key=str(raw["key"]),
            data=None if data is None else from_wire(data, self.keyring),
            version=int(raw["version"]),
            updated_at=_when(raw["updated_at"]),
            updated_by=raw.get("updated_by"),
            environment=raw.get("environment") or BASE,
        )

    def record(self, raw: dict[str, Any]) -> ChangeRecord:
        return ChangeRecord(
            seq=int(raw["seq"]),
            namespace=str(raw["namespace"]),
            key=str(raw["key"]),
            version=int(raw["version"]),
            action=Action(raw["action"]),
            actor=raw.get("actor"),
            reason=raw.get("reason"),
            before=None,
            after=None,
            changed=tuple(raw.get("changed") or ()),
            origin=str(raw.get("origin") or ""),
            committed_at=_when(raw["at"]),
            environment=raw.get("environment") or None,
            change_set=raw.get("change_set"),
        )

    def logged(self, event: dict[str, Any]) -> LoggedChange:
        """A change event (with its document) as the managers' catch-up takes it."""
        data = event.get("data")
        return LoggedChange(
            self.record(event), None if data is None else from_wire(data, self.keyring)
        )

    # ----------------------------------------------------------------- reads

    async def read_layers(
        self, *, namespaces: Iterable[str] = (), key: str | None = None
    ) -> tuple[int, list[StoredDocument]]:
        """Every stored document the hub loads (one request), and the seq it includes."""
        params: list[tuple[str, str]] = [("namespace", n) for n in namespaces]
        params.append(("environment", _env_param(self.environment or BASE)))
        if key is not None:
            params.append(("key", key))
        response = await self._call("GET", "/api/v1/layers", params=params)
        raise_for_problem(response)
        body = response.json()
        return int(body["seq"]), [self.document(d) for d in body["documents"]]

    def prefetch(self, documents: Sequence[StoredDocument]) -> None:
        grouped: dict[str, list[StoredDocument]] = {}
        for d in documents:
            grouped.setdefault(d.namespace, []).append(d)
        self._prefetched = grouped

    def end_prefetch(self) -> None:
        self._prefetched = None

    async def load(
        self, namespace: str, key: str, *, environment: str = BASE
    ) -> StoredDocument | None:
        for doc in await self.load_everywhere(namespace, key):
            if doc.environment == environment:
                return doc
        return None

    async def load_namespace(
        self,
        namespace: str,
        *,
        keys: Iterable[str] | None = None,
        environments: Sequence[str] = (BASE,),
    ) -> list[StoredDocument]:
        wanted = set(environments)
        if keys is None and self._prefetched is not None and namespace in self._prefetched:
            found = self._prefetched[namespace]
        elif keys is None and self._prefetched is not None:
            found = []  # nothing stored (the start-up read lists every namespace's rows)
        else:
            names = None if keys is None else set(keys)
            _, found = await self.read_layers(namespaces=[namespace])
            found = [d for d in found if names is None or d.key in names]
        return [d for d in found if d.environment in wanted]

    async def load_everywhere(self, namespace: str, key: str) -> list[StoredDocument]:
        """The base's and this hub's environment's documents: the server validates a
        base write against every other environment itself."""
        _, found = await self.read_layers(namespaces=[namespace], key=key)
        return found

    async def change_at(
        self, namespace: str, key: str, version: int, *, environment: str = BASE
    ) -> LoggedChange:
        response = await self._call(
            "GET",
            f"/api/v1/layers/{namespace}/{key}/versions/{version}",
            # Exactly the layer asked for: BASE is the base's document even in an
            # environment's hub (a base event's data, a rollback of the base).
            params={"environment": _env_param(environment)},
        )
        raise_for_problem(response, namespace=namespace, key=key)
        raw = response.json()
        data = raw.get("data")
        record = ChangeRecord(
            seq=0,
            namespace=namespace,
            key=key,
            version=int(raw["version"]),
            action=Action.UPDATE,
            actor=raw.get("updated_by"),
            reason=None,
            before=None,
            after=None,
            changed=(),
            origin="",
            committed_at=_when(raw["updated_at"]),
            environment=raw.get("environment") or None,
        )
        return LoggedChange(record, None if data is None else from_wire(data, self.keyring))

    async def history(
        self,
        namespace: str,
        key: str,
        *,
        limit: int = 50,
        before_version: int | None = None,
        environment: str = BASE,
    ) -> list[ChangeRecord]:
        response = await self._call(
            "GET",
            f"/api/v1/namespaces/{namespace}/documents/{key}/history",
            params={"environment": _env_param(environment), "limit": min(limit, 1000)},
        )
        raise_for_problem(response, namespace=namespace, key=key)
        records = []
        for raw in response.json():
            raw = {**raw, "namespace": namespace, "key": key}
            record = self.record(raw)
            if before_version is None or record.version < before_version:
                records.append(record)
        return records

    # ----------------------------------------------------------------- writes

    async def write(self, w: Write) -> tuple[StoredDocument, ChangeRecord]:
        data = None if w.data is None else decrypt_document(w.data, self.keyring)
        action = w.action if w.action in _SENT_ACTIONS else Action.UPDATE
        params = {"environment": _env_param(w.environment)}
        if w.reason:
            params["reason"] = w.reason[:255]
        response = await self._call(
            "PUT",
            f"/api/v1/layers/{w.namespace}/{w.key}",
            params=params,
            headers={"If-Match": f'"{w.expected_version}"'},
            json={"data": data, "action": str(action)},
        )
        raise_for_problem(response, namespace=w.namespace, key=w.key, expected=w.expected_version)
        raw = response.json()
        record = self.record(raw)
        return _written(w, record), record

    async def write_all(self, writes: Sequence[Write]) -> list[tuple[StoredDocument, ChangeRecord]]:
        """A change set: ``POST /api/v1/layers``, one transaction on the server."""
        if len(writes) == 1:
            return [await self.write(writes[0])]
        members = [
            {
                "namespace": w.namespace,
                "key": w.key,
                "environment": _env_param(w.environment),
                "expected_version": w.expected_version,
                "data": None if w.data is None else decrypt_document(w.data, self.keyring),
                "action": str(w.action if w.action in _SENT_ACTIONS else Action.UPDATE),
            }
            for w in writes
        ]
        reason = next((w.reason for w in writes if w.reason), None)
        response = await self._call(
            "POST",
            "/api/v1/layers",
            params={"reason": reason[:255]} if reason else None,
            json={"writes": members},
        )
        first = writes[0]
        raise_for_problem(
            response, namespace=first.namespace, key=first.key, expected=first.expected_version
        )
        by_member = {
            (r["namespace"], r["key"], r.get("environment") or BASE): r for r in response.json()
        }
        results = []
        for w in writes:
            record = self.record(by_member[(w.namespace, w.key, w.environment)])
            results.append((_written(w, record), record))
        return results


def _written(w: Write, record: ChangeRecord) -> StoredDocument:
    """The document ``w`` stored, as the server's answer ``record`` numbers it."""
    return StoredDocument(
        namespace=w.namespace,
        key=w.key,
        data=w.data,
        version=record.version,
        updated_at=record.committed_at,
        updated_by=record.actor,
        environment=w.environment,
    )


_SENT_ACTIONS = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE, Action.ROLLBACK})
