"""The served OpenAPI document, kept valid OpenAPI 3.1.

FastAPI describes a server-sent-event route with ``itemSchema``, a field of OpenAPI 3.2,
while it declares the document 3.1.0; a strict validator or client generator then refuses
the whole document. Swagger UI and schemathesis do not read 3.2 yet, so the document stays
3.1 and the field moves to an extension (``x-itemSchema``), which 3.1 allows on a media type
and which still tells a reader what each event looks like.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

__all__ = ["keep_openapi_31"]

# Media-type fields OpenAPI 3.2 added that 3.1 forbids, and the extension each becomes.
_FIELDS_32 = {"itemSchema": "x-itemSchema", "itemEncoding": "x-itemEncoding"}


def _as_31(document: dict[str, Any]) -> dict[str, Any]:
    """Move 3.2-only media-type fields to extensions, in place (idempotent)."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                for media_type, media in response.get("content", {}).items():
                    for field, extension in _FIELDS_32.items():
                        if field in media:
                            media[extension] = media.pop(field)
                    _stream_items(media_type, media)
    return document


def _stream_items(media_type: str, media: dict[str, Any]) -> None:
    """A stream route declared with a response model (as the events route is, so its
    schema is in the components) gets that model as the schema of the whole body; it
    describes each event, so it moves to ``x-itemSchema`` and the body is a string."""
    schema = media.get("schema")
    if media_type == "text/event-stream" and isinstance(schema, dict) and "$ref" in schema:
        media.setdefault("x-itemSchema", {"$ref": schema["$ref"]})
        media["schema"] = {"type": "string"}


def keep_openapi_31(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) return a valid 3.1 document."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return _as_31(generate())  # FastAPI caches the document; moving twice is a no-op

    app.openapi = openapi  # type: ignore[method-assign]
