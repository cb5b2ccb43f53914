"""Many instances: leader election with fencing, heartbeats, replies to changes, the
consistency check. Needs Redis (the ``redis`` extra); see docs/cluster.md.

Nothing here imports a manager or the hub: the hub hands a `ClusterNode` what it needs.
"""

from .fleet import Drift, FleetReport, InstanceInfo, InstanceReply, NamespaceDigest
from .lease import LeaderLease
from .node import ClusterNode, ClusterOptions, ClusterStatus, InstanceState

__all__ = [
    "ClusterNode",
    "ClusterOptions",
    "ClusterStatus",
    "Drift",
    "FleetReport",
    "InstanceInfo",
    "InstanceReply",
    "InstanceState",
    "LeaderLease",
    "NamespaceDigest",
]
