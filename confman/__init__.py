"""confman: reactive, observable, typed configuration for services run as many instances."""

from .bus import ChangeBus, ChangeNotice, LocalBus
from .change import Action, ChangeRecord, ConfigChange, FieldSource, Layer
from .exceptions import (
    ConcurrencyConflict,
    ConfigSourceError,
    ConfmanError,
    FieldError,
    NotFound,
    SchemaOutOfDate,
    SecretsUnavailable,
    StoreUnavailable,
    ValidationFailed,
)
from .hub import ConfigHub
from .limits import Limits
from .manager import DEFAULT_KEY, ConfigurationManager, ManagerStats, Problem
from .store import upgrade, upgrade_async

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_KEY",
    "Action",
    "ChangeBus",
    "ChangeNotice",
    "ChangeRecord",
    "ConcurrencyConflict",
    "ConfigChange",
    "ConfigHub",
    "ConfigSourceError",
    "ConfigurationManager",
    "ConfmanError",
    "FieldError",
    "FieldSource",
    "Layer",
    "Limits",
    "LocalBus",
    "ManagerStats",
    "NotFound",
    "Problem",
    "SchemaOutOfDate",
    "SecretsUnavailable",
    "StoreUnavailable",
    "ValidationFailed",
    "__version__",
    "upgrade",
    "upgrade_async",
]
