"""`Leadership`: what a fleet's node needs from an election, whatever runs it.

Two implementations: `confman.cluster.lease.LeaderLease` (a Redis lease) and
`confman.cluster.pg_lease.PostgresLeaderLease` (a PostgreSQL advisory lock). Both hand
out fencing tokens that the database checks (`ConfigStore.prune_changes`), and both stop
believing they lead before a successor can start.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from reactivex.subject import BehaviorSubject

__all__ = ["Leadership"]


@runtime_checkable
class Leadership(Protocol):
    """An instance's part in its cluster's election."""

    leadership: BehaviorSubject[bool]
    """``False``, then every change of `is_leader`."""

    @property
    def is_leader(self) -> bool:
        """Whether this instance certainly leads now (checked against the clock)."""
        ...

    @property
    def fencing_token(self) -> int | None:
        """The token of the current leadership; ``None`` when not leading."""
        ...

    def start(self) -> None:
        """Begin campaigning in the background."""

    async def close(self) -> None:
        """Stop campaigning; give the leadership up at once if held."""

    def check(self) -> None:
        """Step down now if the leadership has run out (called before leader work)."""

    def step_down(self, why: str) -> None:
        """Stop leading now (e.g. a newer leader's token was seen)."""

    async def current_leader(self) -> tuple[str, int] | None:
        """Who leads the cluster now: ``(instance id, fencing token)``, or ``None``."""
        ...
