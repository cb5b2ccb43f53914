"""The SQL source of truth: tables, engine, queries and migrations glue.

Nothing here knows about managers; the hub composes it."""

from .engine import DEFAULT_DATABASE_URL, create_engine, normalize_url
from .schema import check_schema, head_revision, upgrade, upgrade_async
from .store import ConfigStore, FencingTokenRejected, LoggedChange, StoredDocument, Write

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ConfigStore",
    "FencingTokenRejected",
    "LoggedChange",
    "StoredDocument",
    "Write",
    "check_schema",
    "create_engine",
    "head_revision",
    "normalize_url",
    "upgrade",
    "upgrade_async",
]
