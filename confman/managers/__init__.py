"""The managers confman ships: the configuration of an LLM gateway.

See ``docs/managers.md`` for the models and ``docs/gateway.md`` for a request path.
"""

from .cache import CacheBackend, CacheConfig, CacheConfigurationManager
from .model_provider import ModelProvider, ModelProviderConfigurationManager, ProviderType
from .router import (
    Deployment,
    ModelAlias,
    RetryPolicy,
    RouterConfig,
    RouterConfigurationManager,
    Strategy,
)
from .virtual_key import (
    Budget,
    BudgetPeriod,
    CacheInfo,
    IssuedKey,
    VirtualKey,
    VirtualKeyConfigurationManager,
    VirtualKeySecret,
    VirtualKeySecretManager,
)

__all__ = [
    "Budget",
    "BudgetPeriod",
    "CacheBackend",
    "CacheConfig",
    "CacheConfigurationManager",
    "CacheInfo",
    "Deployment",
    "IssuedKey",
    "ModelAlias",
    "ModelProvider",
    "ModelProviderConfigurationManager",
    "ProviderType",
    "RetryPolicy",
    "RouterConfig",
    "RouterConfigurationManager",
    "Strategy",
    "VirtualKey",
    "VirtualKeyConfigurationManager",
    "VirtualKeySecret",
    "VirtualKeySecretManager",
]
