"""The notice on the wire, shared by every transport: ``{namespace, key, version, seq,
origin}`` as JSON. It names a document, never its value, so no secret ever travels."""

from __future__ import annotations

import json

from .base import ChangeNotice

__all__ = ["decode_notice", "encode_notice"]


def encode_notice(notice: ChangeNotice) -> str:
    return json.dumps(
        {
            "namespace": notice.namespace,
            "key": notice.key,
            "version": notice.version,
            "seq": notice.seq,
            "origin": notice.origin,
        },
        separators=(",", ":"),
    )


def decode_notice(raw: bytes | str) -> ChangeNotice:
    """Parse a notice; raises ``ValueError`` (or ``KeyError``/``TypeError``) if malformed."""
    data = json.loads(raw)
    notice = ChangeNotice(
        namespace=str(data["namespace"]),
        key=str(data["key"]),
        version=int(data["version"]),
        seq=int(data["seq"]),
        origin=str(data["origin"]),
    )
    if notice.version < 1 or notice.seq < 1:
        raise ValueError("version and seq must be positive")
    return notice
