"""Change sets: several writes, on any managers and environments, committed in one
database transaction and applied by every instance at once.

```python
async with hub.change_set(actor="ops", reason="add gpt-5") as cs:
    cs.create(providers, "openai-2", {...})
    cs.update(router, {"aliases": {...}})       # may route to the provider just added
# committed here: cs.changes holds every member's ConfigChange
```

How a set is judged and committed:

- Every member is version-checked (against the version it names, or else the one this
  instance holds); any conflict aborts the whole set with `ChangeSetConflict`, naming
  each member that lost.
- Each member is validated by its model, and the rules across managers
  (`validate_write`, such as router <-> model providers) run once every member's new
  value is known, on the state after the **whole** set: adding a provider and routing to
  it is one valid set. A refused member aborts the set with `ChangeSetInvalid` listing
  every refused member and field.
- The rows share one change-set id (``ConfigChange.change_set``, ``ChangeRecord.change_set``)
  and one transaction: nothing is half-written.
- Instances apply a set whole: this one, after the commit; others when its notices (or
  catch-up) bring it. Subscribers are told only once every member is in memory, one
  change after another in the order the set wrote them.

A single ``update()`` stays what it was: a set of one, with no change-set id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .change import BASE, Action, ChangeRecord, ConfigChange
from .exceptions import (
    ChangeSetConflict,
    ChangeSetInvalid,
    ConcurrencyConflict,
    ConfmanError,
    FieldError,
    NotFound,
    ValidationFailed,
)
from .manager import (
    _PENDING,
    _RULE_ENVIRONMENT,
    DEFAULT_KEY,
    OWN,
    ConfigurationManager,
    Environment,
    _check_write_labels,
    _Origin,
    _Step,
)
from .patch import remove_paths

if TYPE_CHECKING:
    from .hub import ConfigHub

__all__ = ["MAX_MEMBERS", "ChangeSet"]

#: Members one set may hold: a set is one transaction, and one transaction must finish
#: within the database deadline.
MAX_MEMBERS = 1_000

Build = Callable[[Any, dict[str, Any] | None, bool], Any]


@dataclass(slots=True)
class _Member:
    manager: ConfigurationManager[Any]
    key: str
    environment: Environment
    action: Action
    expected_version: int | None
    build: Build | None  # None: a rollback, whose target is read at commit
    must_exist: bool = False
    must_not_exist: bool = False
    resetting: bool = False
    to_version: int | None = None


class ChangeSet:
    """Writes collected now, committed together by `commit` (or at the end of
    ``async with hub.change_set(...)``). Build one with `ConfigHub.change_set`."""

    def __init__(
        self, hub: ConfigHub, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        self.hub = hub
        self.actor = actor
        self.reason = reason
        self.id = uuid.uuid4().hex
        self.changes: list[ConfigChange[Any]] = []
        self._members: list[_Member] = []
        self._done = False

    async def __aenter__(self) -> ChangeSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._done:
            await self.commit()

    def __len__(self) -> int:
        return len(self._members)

    # ----------------------------------------------------------------- members

    def _manager(self, manager: Any) -> ConfigurationManager[Any]:
        if isinstance(manager, ConfigurationManager):
            return manager
        return self.hub.manager(manager)

    def _add(self, member: _Member) -> None:
        if self._done:
            raise ConfmanError("this change set is committed already; start a new one")
        if len(self._members) >= MAX_MEMBERS:
            raise ConfmanError(f"a change set holds at most {MAX_MEMBERS} members")
        self._members.append(member)

    def update(
        self,
        manager: Any,
        change: Any,
        *,
        key: str = DEFAULT_KEY,
        environment: Environment = OWN,
        expected_version: int | None = None,
        replace: bool = False,
    ) -> None:
        """As `ConfigurationManager.update`, in this set."""
        m = self._manager(manager)

        def build(stored: Any, parent: dict[str, Any] | None, over: bool) -> Any:
            return m._apply_change(
                stored, change, key, replace=replace, parent=parent, overlaying=over
            )

        self._add(
            _Member(m, key, environment, Action.UPDATE, expected_version, build, must_exist=m.keyed)
        )

    def create(self, manager: Any, key: str, value: Any, *, environment: Environment = OWN) -> None:
        """As `ConfigurationManager.create`, in this set."""
        m = self._manager(manager)
        if not m.keyed:
            raise TypeError(f"{m.namespace} is a singleton; use update()")

        def build(_stored: Any, parent: dict[str, Any] | None, over: bool) -> Any:
            return m._apply_change(
                None, value, key, source="create", replace=over, parent=parent, overlaying=over
            )

        self._add(_Member(m, key, environment, Action.CREATE, None, build, must_not_exist=True))

    def delete(
        self,
        manager: Any,
        key: str = DEFAULT_KEY,
        *,
        environment: Environment = OWN,
        expected_version: int | None = None,
    ) -> None:
        """As `ConfigurationManager.delete`, in this set."""
        m = self._manager(manager)
        self._add(
            _Member(
                m, key, environment, Action.DELETE, expected_version,
                lambda _stored, parent, over: m._gone(parent, over), must_exist=True,
            )
        )  # fmt: skip

    def reset(
        self,
        manager: Any,
        key: str = DEFAULT_KEY,
        fields: Iterable[str] | None = None,
        *,
        environment: Environment = OWN,
        expected_version: int | None = None,
    ) -> None:
        """As `ConfigurationManager.reset`, in this set."""
        m = self._manager(manager)
        paths = None if fields is None else list(fields)

        def build(stored: Any, _parent: Any, _over: bool) -> Any:
            if stored is None:
                raise NotFound(f"{m.namespace}/{key} has no overlay there")
            if paths is None:
                return None
            return remove_paths(stored, paths) or None

        self._add(
            _Member(m, key, environment, Action.UPDATE, expected_version, build, resetting=True)
        )

    def rollback(
        self,
        manager: Any,
        key: str = DEFAULT_KEY,
        *,
        to_version: int,
        environment: Environment = OWN,
        expected_version: int | None = None,
    ) -> None:
        """As `ConfigurationManager.rollback`, in this set."""
        m = self._manager(manager)
        self._add(
            _Member(m, key, environment, Action.ROLLBACK, expected_version, None,
                    to_version=to_version)
        )  # fmt: skip

    def set_document(
        self,
        manager: Any,
        key: str,
        document: dict[str, Any] | None,
        *,
        environment: Environment,
        expected_version: int | None,
        action: Action,
    ) -> None:
        """Store ``document`` as it is (a plain, decrypted document; None: remove it) as
        ``key``'s row in ``environment``: what promote and import write."""
        m = self._manager(manager)
        self._add(
            _Member(m, key, environment, action, expected_version,
                    lambda _stored, _parent, _over: document)
        )  # fmt: skip

    # ----------------------------------------------------------------- commit

    async def preview(self) -> list[ConfigChange[Any]]:
        """What the set would do, member by member (effective values before and after
        in each member's environment); nothing is written.

        Raises:
            ChangeSetInvalid, ChangeSetConflict: as `commit` would.
        """
        return await self._run(write=False)

    async def commit(self) -> list[ConfigChange[Any]]:
        """Commit every member in one transaction; returns their changes (also in
        `changes`). Members that would store what is stored are not written (their
        change says ``unchanged``); a set with nothing to write writes nothing.

        Raises:
            ChangeSetInvalid: members were refused (every one listed); nothing written.
            ChangeSetConflict: members lost to other writers (each named); nothing written.
            NotFound, UnknownEnvironment: a member names what does not exist.
        """
        if self._done:
            raise ConfmanError("this change set is committed already")
        self._done = True
        self.changes = await self._run(write=True)
        return self.changes

    async def _run(self, *, write: bool) -> list[ConfigChange[Any]]:
        if not self._members:
            return []
        origin = _Origin(self.actor, self.reason)
        targets: list[str] = []
        for member in self._members:
            _check_write_labels(member.manager.namespace, member.key, origin, member.action)
            target = member.manager._target_name(member.environment)
            if target != BASE:
                await self.hub.check_environment(target)
            targets.append(target)
        # Rules that read other managers must see the newest of them (as those managers'
        # own writes make sure); catch-up takes the locks this set is about to hold.
        if any(m.manager.rules_read_others for m in self._members):
            await self.hub.catch_up()
        rollbacks = [
            await m.manager._rollback_target(m.key, m.to_version, m.environment)
            if m.to_version is not None
            else None
            for m in self._members
        ]
        locks = sorted(
            {(m.manager.namespace, m.manager._lock_name(m.key, t)): m.manager
             for m, t in zip(self._members, targets, strict=True)}.items()
        )  # fmt: skip
        # Acquired and released by hand: an exit stack costs more per lock than the
        # lock itself, and a set may hold a thousand.
        held: list[asyncio.Lock] = []
        try:
            for (_namespace, name), manager in locks:
                lock = manager._lock(name)
                await lock.acquire()
                held.append(lock)
            steps = await self._prepare(origin, targets, rollbacks)
            await self._judge(steps)
            if not write:
                return [await self._preview_everywhere(step, steps) for step in steps]
            return await self._commit(steps)
        finally:
            for lock in reversed(held):
                lock.release()

    async def _prepare(
        self, origin: _Origin, targets: list[str], rollbacks: list[dict[str, Any] | None]
    ) -> list[_Step[Any]]:
        steps: list[_Step[Any]] = []
        conflicts: list[ConcurrencyConflict] = []
        refused: list[ValidationFailed] = []
        seen: set[tuple[str, str, str]] = set()
        for member, target, rollback_to in zip(self._members, targets, rollbacks, strict=True):
            m = member.manager
            if (m.namespace, target, member.key) in seen:
                reason = "appears twice in one change set; merge the two changes into one"
                raise ChangeSetInvalid(
                    [ValidationFailed(m.namespace, member.key, [FieldError("", reason)],
                                      source="change set", environment=target or None)]
                )  # fmt: skip
            seen.add((m.namespace, target, member.key))
            build = member.build
            if build is None:
                document = rollback_to

                def build(_s: Any, _p: Any, _o: bool, document: Any = document) -> Any:
                    return document

            try:
                step = await m._prepare(
                    member.key, build, target, action=member.action,
                    expected_version=member.expected_version, origin=origin,
                    must_exist=member.must_exist, must_not_exist=member.must_not_exist,
                    resetting=member.resetting, change_set=self.id, rules=False,
                )  # fmt: skip
            except ConcurrencyConflict as e:
                conflicts.append(e)
                continue
            except ValidationFailed as e:
                refused.append(e if e.environment else _in(e, target))
                continue
            steps.append(step)
        if conflicts:
            raise ChangeSetConflict(conflicts)
        if refused:
            raise ChangeSetInvalid(refused)
        return steps

    async def _judge(self, steps: list[_Step[Any]]) -> None:
        """The rules across managers, over the state after the whole set."""
        pending: dict[tuple[str, str | None, str], Any] = {}
        for step in steps:
            view = step.target if step.slot is None else None
            pending[step.manager.namespace, view, step.key] = step.candidate.effective
        for step in steps:
            if step.slot is None:
                await step.manager._prepare_rules(step.target)
        refused: list[ValidationFailed] = []
        judged = _PENDING.set(pending)
        try:
            for step in steps:
                where = _RULE_ENVIRONMENT.set(step.target if step.slot is None else None)
                try:
                    step.manager.validate_write(step.key, step.candidate.value)
                    if step.target == BASE and step.manager.inherits and not step.unchanged:
                        await step.manager._check_environments(step.key, step.candidate.plain)
                except ValidationFailed as e:
                    refused.append(e if e.environment else _in(e, step.target))
                finally:
                    _RULE_ENVIRONMENT.reset(where)
        finally:
            _PENDING.reset(judged)
        if refused:
            for step in steps:
                step.manager.stats.validation_failures += 1
            raise ChangeSetInvalid(refused)

    def _preview(self, step: _Step[Any]) -> ConfigChange[Any]:
        change = step.manager._make_change(
            step.key, step.old, step.candidate.effective, self._record(step, step.target)
        )
        if step.unchanged:
            return _unchanged(change)
        return change

    def _record(self, step: _Step[Any], environment: str) -> ChangeRecord:
        """The change-log row ``step`` would write, as seen in ``environment``."""
        return ChangeRecord(
            0, step.manager.namespace, step.key, step.write.expected_version + 1,
            step.write.action, step.write.actor, step.write.reason, step.write.before,
            step.write.after, tuple(step.write.changed), step.write.origin,
            step.at or _now(), environment or None, self.id,
        )  # fmt: skip

    async def _preview_everywhere(
        self, step: _Step[Any], steps: list[_Step[Any]]
    ) -> ConfigChange[Any]:
        """`_preview`, and for a base write every environment's view of it: a base
        change reaches each environment that does not override what it changes."""
        change = self._preview(step)
        m = step.manager
        if step.unchanged or step.target != BASE or not m.inherits:
            return change
        names = sorted(e.name for e in await self.hub.environments())
        if not names:
            return change
        stored = {
            d.environment: d for d in await self.hub.backend.load_everywhere(m.namespace, step.key)
        }

        def plain(environment: str) -> dict[str, Any] | None:
            doc = stored.get(environment)
            if doc is None or doc.data is None:
                return None
            return m._decode(doc.data, step.key, doc.version)

        # The set's own overlays of this document: the state after the whole set.
        pending = {
            s.target: s.candidate.plain
            for s in steps
            if s.manager is m and s.key == step.key and s.target != BASE
        }
        old_base, new_base = plain(BASE), step.candidate.plain
        seen: list[ConfigChange[Any]] = []
        for name in names:
            old_overlay = plain(name)
            new_overlay = pending.get(name, old_overlay)
            old = m._stored_value(step.key, m._combined(old_base, old_overlay))
            new = m._stored_value(step.key, m._combined(new_base, new_overlay))
            there = m._make_change(step.key, old, new, self._record(step, name))
            if there.effective:
                seen.append(there)
        return replace(change, per_environment=tuple(seen))

    async def _commit(self, steps: list[_Step[Any]]) -> list[ConfigChange[Any]]:
        written = [s for s in steps if not s.unchanged]
        try:
            results = await self.hub.backend.write_all([s.write for s in written])
        except ConcurrencyConflict:
            raise ChangeSetConflict(await self._who_lost(written)) from None
        changes: dict[int, ConfigChange[Any]] = {}
        with self.hub._holding():
            for step, (stored, record) in zip(written, results, strict=True):
                changes[id(step)] = await step.manager._finish(step, stored, record)
        return [
            changes[id(step)] if id(step) in changes else _unchanged(self._preview(step))
            for step in steps
        ]

    async def _who_lost(self, written: list[_Step[Any]]) -> list[ConcurrencyConflict]:
        lost: list[ConcurrencyConflict] = []
        for step in written:
            m = step.manager
            stored = await self.hub.backend.load(m.namespace, step.key, environment=step.target)
            current = 0 if stored is None else stored.version
            if current != step.write.expected_version:
                m.stats.conflicts += 1
                lost.append(
                    ConcurrencyConflict(
                        m.namespace,
                        step.key,
                        expected=step.write.expected_version,
                        current=current,
                    )
                )
        if not lost:  # lost, then the winner's change was undone: still say who it was
            first = written[0]
            lost.append(
                ConcurrencyConflict(
                    first.manager.namespace,
                    first.key,
                    expected=first.write.expected_version,
                    current=-1,
                )
            )
        return lost


def _in(e: ValidationFailed, environment: str) -> ValidationFailed:
    """``e`` saying which environment's document it refused."""
    if not environment:
        return e
    return type(e)(e.namespace, e.key, e.errors, source=e.source, environment=environment)


def _unchanged(change: ConfigChange[Any]) -> ConfigChange[Any]:
    return replace(
        change, new=change.old, seq=0, changed_fields=(), stored_changed=(), unchanged=True
    )


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
