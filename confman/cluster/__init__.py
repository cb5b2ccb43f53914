"""Many instances: leader election with fencing, heartbeats, replies to changes, the
consistency check. On Redis (the ``redis`` extra) or on PostgreSQL alone (the
``postgres`` extra); see docs/cluster.md.

Nothing here imports a manager or the hub: the hub hands a `ClusterNode` what it needs.
"""

from typing import TYPE_CHECKING, Any

from .fleet import Drift, FleetRegistry, FleetReport, InstanceInfo, InstanceReply, NamespaceDigest
from .leadership import Leadership
from .node import ClusterNode, ClusterOptions, ClusterStatus, InstanceState

if TYPE_CHECKING:
    from .lease import LeaderLease
    from .pg_lease import PostgresLeaderLease


def __getattr__(name: str) -> Any:
    # Each election imports its own driver only when asked for: a PostgreSQL-only
    # install has no redis package.
    if name == "LeaderLease":
        from .lease import LeaderLease

        return LeaderLease
    if name == "PostgresLeaderLease":
        from .pg_lease import PostgresLeaderLease

        return PostgresLeaderLease
    raise AttributeError(name)


__all__ = [
    "ClusterNode",
    "ClusterOptions",
    "ClusterStatus",
    "Drift",
    "FleetRegistry",
    "FleetReport",
    "InstanceInfo",
    "InstanceReply",
    "InstanceState",
    "LeaderLease",
    "Leadership",
    "NamespaceDigest",
    "PostgresLeaderLease",
]
