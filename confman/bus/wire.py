"""The notice on the wire, shared by every transport: ``{namespace, key, version, seq,
origin}`` as JSON, plus ``environment`` for a change to an environment's document and
``change``, the committed row sealed with the hubs' key (`confman.sealed`). No value
travels in the clear."""

from __future__ import annotations

import json
import logging
from typing import Protocol

from .base import ChangeNotice, NoticeHandler, ReconnectHandler

__all__ = ["decode_notice", "decode_received", "deliver", "encode_notice", "reconnected"]

log = logging.getLogger("confman.bus")


class ReceiveCounts(Protocol):
    """The counters every bus keeps of what it received."""

    malformed: int
    received: int


def encode_notice(notice: ChangeNotice) -> str:
    fields: dict[str, str | int] = {
        "namespace": notice.namespace,
        "key": notice.key,
        "version": notice.version,
        "seq": notice.seq,
        "origin": notice.origin,
    }
    if notice.environment:  # the base says nothing: what every earlier notice said
        fields["environment"] = notice.environment
    if notice.change_set:
        fields["change_set"] = notice.change_set
    if not notice.replies:
        fields["quiet"] = True
    if notice.change is not None:
        fields["change"] = notice.change
    return json.dumps(fields, separators=(",", ":"))


def decode_notice(raw: bytes | str) -> ChangeNotice:
    """Parse a notice; raises ``ValueError`` (or ``KeyError``/``TypeError``) if malformed."""
    data = json.loads(raw)
    notice = ChangeNotice(
        namespace=str(data["namespace"]),
        key=str(data["key"]),
        version=int(data["version"]),
        seq=int(data["seq"]),
        origin=str(data["origin"]),
        environment=str(data.get("environment") or ""),
        change_set=str(data["change_set"]) if data.get("change_set") else None,
        replies=not data.get("quiet"),
        # Opened (and checked) by the receiving hub; anything but a string is not one.
        change=data["change"] if isinstance(data.get("change"), str) else None,
    )
    if notice.version < 1 or notice.seq < 1:
        raise ValueError("version and seq must be positive")
    return notice


def decode_received(raw: bytes | str, stats: ReceiveCounts, where: str) -> ChangeNotice | None:
    """A notice received on ``where``, or ``None`` for a malformed one (counted and
    logged: someone else's message on our channel must not stop the bus)."""
    try:
        return decode_notice(raw)
    except (ValueError, KeyError, TypeError):
        stats.malformed += 1
        log.warning("ignoring a malformed notice on %s", where)
        return None


def deliver(handler: NoticeHandler, notice: ChangeNotice, stats: ReceiveCounts) -> None:
    """Hand ``notice`` to the hub; a handler that raises is logged, never the bus's end."""
    stats.received += 1
    try:
        handler(notice)
    except Exception:
        log.exception("notice handler failed for %s", notice)


def reconnected(callback: ReconnectHandler | None) -> None:
    """Tell the hub the bus (re)subscribed, so it catches up on what it missed."""
    if callback is None:
        return
    try:
        callback()
    except Exception:
        log.exception("reconnect handler failed")
