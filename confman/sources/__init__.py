"""Override sources, one module each, layered over the database in precedence order.

``model defaults < database < .env < local.env < process environment``
"""

from .base import Override, OverrideSource
from .dotenv import DotEnvSource
from .environ import EnvironmentSource

__all__ = ["DotEnvSource", "EnvironmentSource", "Override", "OverrideSource"]
