"""The managers confman ships."""

from .cache import CacheConfig, CacheConfigurationManager

__all__ = ["CacheConfig", "CacheConfigurationManager"]
