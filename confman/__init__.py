"""confman: reactive, observable, typed configuration for services run as many instances."""

from .bus import ChangeBus, ChangeNotice, LocalBus
from .change import Action, ChangeRecord, ConfigChange, FieldSource, Layer
from .environments import Environment
from .exceptions import (
    ConcurrencyConflict,
    ConfigSourceError,
    ConfmanError,
    EnvironmentNotEmpty,
    FieldError,
    NotFound,
    PermissionDenied,
    SchemaOutOfDate,
    SecretsUnavailable,
    StoreUnavailable,
    UnknownEnvironment,
    ValidationFailed,
)
from .hub import ConfigHub
from .limits import Limits
from .manager import DEFAULT_KEY, OWN, ConfigurationManager, ManagerStats, Problem, Resolved
from .store import upgrade, upgrade_async

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_KEY",
    "OWN",
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
    "Environment",
    "EnvironmentNotEmpty",
    "FieldError",
    "FieldSource",
    "Layer",
    "Limits",
    "LocalBus",
    "ManagerStats",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "Resolved",
    "SchemaOutOfDate",
    "SecretsUnavailable",
    "StoreUnavailable",
    "UnknownEnvironment",
    "ValidationFailed",
    "__version__",
    "upgrade",
    "upgrade_async",
]
