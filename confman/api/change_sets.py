"""Change sets over HTTP: several writes in one transaction, a committed set as one entry,
rolling a set back, and promote (one environment's values into another's overlays).

Every member is checked as its own document route would check it (role, namespace,
environment, key) before anything is judged: a member the token may not write is a 403
naming it, and nothing is written. The set is then judged whole (`confman.changeset`):

- 412: members named an ``if_match`` that is not the stored version (every one listed);
- 409: members lost to another writer (no ``if_match``, or a race at commit);
- 422: members refused (every member and field listed, as the token may read them).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from confman import ConfigChange, ConfigurationManager, NotFound
from confman.changeset import ChangeSet
from confman.exceptions import ChangeSetConflict, ChangeSetInvalid, ConcurrencyConflict

from . import models, views
from .auth import CurrentPrincipal, hub_of, manager_for, require, served
from .diffs import diff
from .documents import _check_key
from .params import well_formed
from .problems import ApiProblem
from .scope import check_allowed, environment_for, label
from .tokens import Principal, Role

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["change sets"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.Problem, "description": text}
    for status, text in {
        400: "a malformed path or query (invalid UTF-8, a repeated parameter)",
        401: "no or unknown token",
        403: "the token may not write a member (each named); nothing written",
        404: "a member names no such namespace, environment, item or version",
        409: "members lost to other writers (each named, with its version now)",
        412: "members' if_match is not the stored version (each named)",
        413: "the request body is too large",
        422: "members refused (each member and field named); nothing written",
        503: "the database is unreachable",
    }.items()
}

DryRun = Annotated[bool, Query(description="judge the set and show its diff; store nothing")]
SetId = Annotated[str, Path(max_length=64, description="a change set's id")]


def _member_errors(failures: list[tuple[int, ApiProblem]]) -> list[dict[str, Any]]:
    return [{"path": f"members.{i}", "message": p.detail} for i, p in failures]


async def _check_members(
    request: Request, who: Principal, body: models.ChangeSetRequest
) -> list[tuple[ConfigurationManager[Any], str, str | None]]:
    """(manager, key, environment) of every member, each checked as its document route
    checks it; every refused member is named at once."""
    checked: list[tuple[ConfigurationManager[Any], str, str | None]] = []
    failures: list[tuple[int, ApiProblem]] = []
    for i, member in enumerate(body.members):
        role = Role.ADMIN if member.op == "rollback" else Role.EDITOR  # as the routes ask
        key = member.key if member.key is not None else "default"
        try:
            manager = manager_for(request, who, member.namespace, role=role)
            target = await environment_for(request, who, member.environment)
            _check_key(manager, key)
            if member.op == "reset" and (target is None or not manager.inherits):
                why = "the base has no overlay" if target is None else "it does not inherit"
                raise ApiProblem(422, f"reset removes fields from an overlay; {why}")
        except ApiProblem as e:
            failures.append((i, e))
            continue
        except NotFound as e:  # an unknown environment
            failures.append((i, ApiProblem(404, str(e))))
            continue
        checked.append((manager, key, target))
    if failures:
        # The gravest first: a token refused anywhere learns nothing about the rest.
        status = min({p.status for _, p in failures}, key=lambda s: (s != 403, s != 404, s))
        shown = [(i, p) for i, p in failures if p.status == status]
        detail = "; ".join(f"member {i}: {p.detail}" for i, p in shown)
        raise ApiProblem(status, f"change set not written: {detail}", errors=_member_errors(shown))
    seen: dict[tuple[str, str | None, str], int] = {}
    for i, (manager, key, target) in enumerate(checked):
        where = (manager.namespace, target, key)
        if where in seen:
            message = f"the same document as member {seen[where]}; merge the two into one"
            raise ApiProblem(
                422,
                f"change set not written: member {i} ({manager.namespace}/{key} in "
                f"{label(target)}) is {message}",
                errors=[{"path": f"members.{i}", "message": message}],
            )
        seen[where] = i
    return checked


def _actor(who: Principal, given: str | None) -> str:
    """The audit names the token always; a given actor is who it acted for."""
    return who.name if not given or given == who.name else f"{who.name} ({given})"


def _build(
    cs: ChangeSet,
    body: models.ChangeSetRequest,
    checked: list[tuple[ConfigurationManager[Any], str, str | None]],
) -> None:
    for member, (m, key, target) in zip(body.members, checked, strict=True):
        expected = member.if_match
        if member.op == "update":
            cs.update(
                m, member.value, key=key, environment=target, expected_version=expected,
                replace=member.replace,
            )  # fmt: skip
        elif member.op == "create":
            cs.create(m, key, member.value, environment=target)
        elif member.op == "delete":
            cs.delete(m, key, environment=target, expected_version=expected)
        elif member.op == "reset":
            cs.reset(m, key, member.fields, environment=target, expected_version=expected)
        else:
            assert member.to_version is not None  # the request model makes sure
            cs.rollback(
                m, key, to_version=member.to_version, environment=target,
                expected_version=expected,
            )  # fmt: skip


def _written(
    i: int, change: ConfigChange[Any], *, shown_diff: bool, who: Principal | None = None
) -> models.ChangeSetWritten:
    changed = change.changed_fields
    if change.old is None or change.new is None:
        changed = change.stored_changed
    return models.ChangeSetWritten(
        member=i,
        namespace=change.namespace,
        key=change.key,
        environment=change.environment,
        version=change.version - 1 if change.unchanged and change.seq == 0 else change.version,
        seq=change.seq,
        change_set=change.change_set,
        action=str(change.action),
        changed=list(changed),
        pinned=list(change.pinned),
        unchanged=change.unchanged,
        diff=diff(views.masked(change.old), views.masked(change.new)) if shown_diff else [],
        per_environment=[
            models.EnvironmentEffect(
                environment=there.environment or "",
                changed=list(there.changed_fields),
                diff=diff(views.masked(there.old), views.masked(there.new)),
            )
            for there in change.per_environment
            if who is not None and who.reaches(there.environment)
        ],
    )


def change_set_result(
    changes: list[ConfigChange[Any]],
    *,
    dry_run: bool,
    change_set: str | None,
    who: Principal | None = None,
) -> models.ChangeSetResult:
    """``who``: whose environments a preview's `per_environment` may show (none without)."""
    return models.ChangeSetResult(
        change_set=change_set if changes else None,
        dry_run=dry_run,
        members=[_written(i, c, shown_diff=True, who=who) for i, c in enumerate(changes)],
    )


def _where(
    conflict: ConcurrencyConflict,
    members: list[tuple[ConfigurationManager[Any], str, str | None]],
) -> list[int]:
    return [
        i
        for i, (m, key, _t) in enumerate(members)
        if (m.namespace, key) == (conflict.namespace, conflict.key)
    ]


def _conflict_problem(
    e: ChangeSetConflict,
    members: list[tuple[ConfigurationManager[Any], str, str | None]],
    if_matches: list[int | None],
    environment: str | None = None,
) -> ApiProblem:
    """412 when every member that lost named the version it expected (an If-Match
    that does not hold), else 409 (it lost a race); both list every member that lost."""
    listed: list[dict[str, Any]] = []
    named_version = bool(if_matches)
    for c in e.conflicts:
        found: list[int | None] = [*_where(c, members)] or [None]
        for i in found:
            entry: dict[str, Any] = {
                "namespace": c.namespace,
                "key": c.key,
                "environment": environment if i is None else members[i][2],
                "expected_version": c.expected_version,
                "current_version": c.current_version,
            }
            if i is not None:
                entry["member"] = i
            named = i is not None and i < len(if_matches) and if_matches[i] is not None
            named_version = named_version and named
            listed.append(entry)
    status = 412 if named_version else 409
    errors = [
        {"path": f"members.{c['member']}" if "member" in c else "", "message": msg}
        for c, msg in zip(listed, _conflict_messages(listed), strict=True)
    ]
    return ApiProblem(status, str(e), conflicts=listed, errors=errors)


def _conflict_messages(listed: list[dict[str, Any]]) -> list[str]:
    return [
        f"{c['namespace']}/{c['key']} in {label(c.get('environment'))} is at version "
        f"{c['current_version']}, not {c['expected_version']}"
        for c in listed
    ]


def _invalid_problem(
    request: Request,
    e: ChangeSetInvalid,
    members: list[tuple[ConfigurationManager[Any], str, str | None]],
) -> ApiProblem:
    who: Principal = request.state.principal
    told = e.seen_by(who.sees)
    failures = told.failures if isinstance(told, ChangeSetInvalid) else (told,)
    listed = []
    for f in failures:
        at = [
            i
            for i, (m, key, target) in enumerate(members)
            if (m.namespace, key) == (f.namespace, f.key)
            and (f.environment is None or target in (f.environment, None))
        ]
        listed.append(
            {
                "member": at[0] if at else None,
                "namespace": f.namespace,
                "key": f.key,
                "environment": f.environment,
                "errors": [{"path": x.path, "message": x.message} for x in f.errors],
            }
        )
    errors = [{"path": x.path, "message": x.message} for x in told.errors]
    return ApiProblem(422, str(told), errors=errors, failures=listed, source=told.source)


async def _run(
    request: Request,
    cs: ChangeSet,
    members: list[tuple[ConfigurationManager[Any], str, str | None]],
    if_matches: list[int | None],
    *,
    dry_run: bool,
) -> list[ConfigChange[Any]]:
    try:
        return await (cs.preview() if dry_run else cs.commit())
    except ChangeSetConflict as e:
        raise _conflict_problem(e, members, if_matches) from None
    except ChangeSetInvalid as e:
        raise _invalid_problem(request, e, members) from None


@router.post(
    "/change-sets",
    responses={**_PROBLEMS, 201: {"model": models.ChangeSetResult}},
    dependencies=[Depends(well_formed)],
)
async def create_change_set(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    body: models.ChangeSetRequest,
    dry_run: DryRun = False,
) -> models.ChangeSetResult:
    """Write every member in one transaction, judged as a whole (rules across
    namespaces see the state after the whole set), or none: 201 with each member's
    change; with ``dry_run`` 200 with each member's diff, nothing stored."""
    checked = await _check_members(request, who, body)
    cs = hub_of(request).change_set(actor=_actor(who, body.actor), reason=body.reason)
    _build(cs, body, checked)
    if_matches = [m.if_match for m in body.members]
    changes = await _run(request, cs, checked, if_matches, dry_run=dry_run)
    if not dry_run and any(not c.unchanged for c in changes):
        response.status_code = 201
    return change_set_result(changes, dry_run=dry_run, change_set=cs.id, who=who)


@router.get(
    "/change-sets/{change_set}",
    responses=_PROBLEMS,
    dependencies=[Depends(well_formed)],
)
async def read_change_set(
    request: Request, who: CurrentPrincipal, change_set: SetId
) -> models.ChangeSetEntry:
    """A committed set as one entry: who, why, when, and each member's change (of the
    namespaces and environments the token may read)."""
    records = await hub_of(request).change_set_records(change_set)
    readable = {m.namespace for m in served(request, who)}
    shown = [r for r in records if r.namespace in readable and who.reaches(r.environment)]
    if not shown:
        raise ApiProblem(404, f"no change set {change_set!r} in the change log")
    first = shown[0]
    return models.ChangeSetEntry(
        change_set=change_set,
        actor=first.actor,
        reason=first.reason,
        at=first.committed_at,
        members=[
            models.ChangeSetRecord(
                **models.record_fields(r),
                namespace=r.namespace,
                key=r.key,
                environment=r.environment,
                diff=diff(r.before, r.after),
            )
            for r in shown
        ],
    )


@router.post(
    "/change-sets/{change_set}/rollback",
    responses={**_PROBLEMS, 201: {"model": models.ChangeSetResult}},
    status_code=201,
    dependencies=[Depends(well_formed)],
)
async def rollback_change_set(
    request: Request,
    who: CurrentPrincipal,
    change_set: SetId,
    reason: Annotated[str | None, Query(max_length=255, description="why")] = None,
) -> models.ChangeSetResult:
    """Undo a set as a new set (editor): each member back to its version before the
    set; nothing is written if any member changed since (409)."""
    require(who, Role.EDITOR, "rolling back a change set")
    hub = hub_of(request)
    records = await hub.change_set_records(change_set)
    members = []
    for r in records:
        manager = manager_for(request, who, r.namespace, role=Role.EDITOR)
        check_allowed(who, r.environment)
        members.append((manager, r.key, r.environment))
    try:
        changes = await hub.rollback_change_set(change_set, actor=who.name, reason=reason)
    except ChangeSetConflict as e:
        raise _conflict_problem(e, members, []) from None
    except ChangeSetInvalid as e:
        raise _invalid_problem(request, e, members) from None
    return change_set_result(
        changes, dry_run=False, change_set=changes[0].change_set if changes else None
    )


def _once(request: Request) -> None:
    """Refuse a repeated ``from``, ``to`` or ``dry_run`` (``namespace`` may repeat)."""
    names = [
        part.partition(b"=")[0]
        for part in (request.scope.get("query_string") or b"").split(b"&")
        if part
    ]
    repeated = [n.decode("latin-1") for n, c in Counter(names).items() if c > 1]
    repeated = [n for n in repeated if n != "namespace"]
    if repeated:
        raise ApiProblem(
            400,
            f"query parameter {repeated[0]!r} is given more than once; give it once",
            errors=[{"path": n, "in": "query", "message": "repeated"} for n in repeated],
        )


@router.post(
    "/promote",
    responses={**_PROBLEMS, 201: {"model": models.ChangeSetResult}},
    dependencies=[Depends(_once)],
)
async def promote(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    source: Annotated[str, Query(alias="from", max_length=63, description="an environment")],
    target: Annotated[str, Query(alias="to", max_length=63, description="an environment")],
    namespace: Annotated[list[str] | None, Query(description="only these namespaces")] = None,
    dry_run: DryRun = False,
    reason: Annotated[str | None, Query(max_length=255, description="why")] = None,
) -> models.ChangeSetResult:
    """Make ``to``'s stored effective values equal ``from``'s by writing ``to``'s
    overlays (never the base), as one change set of action ``promote`` (editor). Without
    ``namespace``: every inheriting namespace the token may write. ``dry_run`` shows
    what it would write; nothing to write answers 200 with no members."""
    require(who, Role.EDITOR, "promoting")
    a = await environment_for(request, who, source)
    b = await environment_for(request, who, target)
    if a is None or b is None or a == b:
        raise ApiProblem(
            422,
            "promote needs two different environments (not the base)",
            errors=[
                {
                    "path": "from" if a is None else "to",
                    "in": "query",
                    "message": "the base" if a is None or b is None else "the same environment",
                }
            ],
        )
    if namespace:
        managers = [
            manager_for(request, who, n, role=Role.EDITOR) for n in dict.fromkeys(namespace)
        ]
        refused = [m.namespace for m in managers if not m.inherits]
        if refused:
            raise ApiProblem(
                422,
                f"{', '.join(refused)} never inherit across environments: not promoted",
                errors=[{"path": "namespace", "in": "query", "message": n} for n in refused],
            )
    else:
        managers = [m for m in served(request, who) if m.inherits]
    if not managers:
        return models.ChangeSetResult(change_set=None, dry_run=dry_run, members=[])
    members: list[tuple[ConfigurationManager[Any], str, str | None]] = [
        (m, "", b) for m in managers
    ]
    try:
        changes = await hub_of(request).promote(
            a, b, namespaces=[m.namespace for m in managers], dry_run=dry_run,
            actor=who.name, reason=reason,
        )  # fmt: skip
    except ChangeSetConflict as e:
        raise _conflict_problem(e, members, [], b) from None
    except ChangeSetInvalid as e:
        raise _invalid_problem(request, e, members) from None
    if changes and not dry_run:
        response.status_code = 201
    return change_set_result(
        changes, dry_run=dry_run, change_set=changes[0].change_set if changes else None
    )
