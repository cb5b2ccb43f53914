"""confman over HTTP: REST API, server-sent events, metrics and the operator dashboard.

Needs the ``api`` extra (FastAPI, uvicorn, prometheus-client) for `create_app`; the token
classes need nothing beyond confman itself, so the ``confman tokens`` commands work
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tokens import TOKEN_PREFIX, ApiToken, ApiTokenManager, IssuedToken, Principal, Role

if TYPE_CHECKING:
    from .app import create_app
    from .stream import StreamLimits

__all__ = [
    "TOKEN_PREFIX",
    "ApiToken",
    "ApiTokenManager",
    "IssuedToken",
    "Principal",
    "Role",
    "StreamLimits",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # imported on use: it needs the api extra
        from .app import create_app

        return create_app
    if name == "StreamLimits":
        from .stream import StreamLimits

        return StreamLimits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
